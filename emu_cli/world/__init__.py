"""The built-in offline world: image-caption pairs whose content is known, made on a CPU."""
