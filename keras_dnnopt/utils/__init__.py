"""Internal helpers shared by the subpackages (argument validation)."""
