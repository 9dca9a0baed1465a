"""The trio engine: source task, worker pool for transforms, one task per sink."""
