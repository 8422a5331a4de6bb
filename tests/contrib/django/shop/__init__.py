"""A shop: orders placed by a view, tasks run by errands."""
