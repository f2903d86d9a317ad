"""The built-in curation filters, each registered through the same hook as third-party ones."""
