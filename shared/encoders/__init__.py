"""Feature encoders: chinese-roberta BERT features, CN-HuBERT, speaker verification."""
