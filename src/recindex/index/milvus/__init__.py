"""The parts of the Milvus backend, each with one concern; `recindex.index.milvus_index.MilvusIndex` is
the `Index` contract over them.

- `connection`: where the items live (a server or a Milvus Lite file, the collection name), the client
  connected on first use and closed, Milvus errors as one clear line, waiting for index builds.
- `features`: what the server supports (nullable fields or presence fields for missing values) and the
  consistency level of each read, with the reasons.
- `schema`: the collection's fields (id, vector, one field per attribute, ARRAY for multi-valued ones,
  presence fields where the server has no nullable fields), the vector index's type and build
  parameters, attribute values as Milvus stores them.
- `search`: filters as Milvus expressions, the search call and its parameters, results in the contract's
  form, and the completion of rows a filtered approximate search left short.

Nothing here imports pymilvus at module level: it is an optional dependency, imported on first use.
"""
