"""A module that fails to import: config must name the task."""

raise RuntimeError("broken on purpose")
