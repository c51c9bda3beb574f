"""The deep ranker: model (DCN-v2 style), features (candidates, features, labels), train (Horovod)."""
