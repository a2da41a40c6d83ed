"""Model stage: a backbone encoder (hub, local or scratch) plus a relation head."""
