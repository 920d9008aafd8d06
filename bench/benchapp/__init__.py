"""The benchmark's models: one audited, one not, with the same eight fields."""
