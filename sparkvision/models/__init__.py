"""Model families: one Task per registry entry (see base.Task)."""
