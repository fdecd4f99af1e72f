"""MemPoser networks: observation encoder, per-track memory, symmetric decoder, heads, attention;
DINOv2 loading for retrieval (backbone.py); safe checkpoints."""
