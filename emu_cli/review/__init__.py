"""The review app: people's decisions for the human curation stages and side-by-side votes."""
