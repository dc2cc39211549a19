"""Pure parts of viz: parsing scrapes, bounded history, and the queries (stat, edges, routes, top)."""
