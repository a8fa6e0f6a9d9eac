"""Identity graph: normalise identifiers, resolve them to customers, merge safely."""
