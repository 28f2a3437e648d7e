"""Product showcases: their rows in PostgreSQL, and the gallery (page, manifest, zip) made of their images."""
