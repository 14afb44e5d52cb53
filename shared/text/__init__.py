"""Text frontend: normalisation, G2P, symbol ids, sentence splitting."""
