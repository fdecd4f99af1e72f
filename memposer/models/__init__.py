"""MemPoser networks: backbone, attention, memory, decoder, heads."""
