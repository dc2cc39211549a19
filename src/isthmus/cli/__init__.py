"""Layer 5, the command line: wires components together."""
