"""GPT (Text2Semantic): semantic-token decoding."""
