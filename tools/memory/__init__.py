"""Memory: documents and every image made, in Qdrant, for retrieval, reuse and style."""
