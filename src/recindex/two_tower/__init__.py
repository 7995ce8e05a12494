"""The two-tower family: user and item towers trained with InfoNCE (in-batch, mixed or full negatives,
logQ correction), served from an exact, FAISS or Milvus index. Its towers (`recindex.models`) are the
base every other family builds on."""
