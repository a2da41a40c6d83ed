"""Format-specific readers and writers behind `rekit.data.readers` (use that module, not these)."""
