"""Layer 1, pure cores: protocol parsing and decisions. No I/O, no clock reads."""
