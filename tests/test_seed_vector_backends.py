"""Chroma and Qdrant take the seed's keyword forms (real chromadb, qdrant-client local
mode), without the seed's destructive re-creation of a Qdrant collection."""

from __future__ import annotations

import numpy as np
import pytest

from omnicache_cluster import ConfigError
from omnicache_cluster.backends.vector import ChromaBackend, QdrantBackend
from omnicache_cluster.backends.vector.qdrant import QdrantConfig
from tests.conftest import unique

V = np.array([1.0, 0.0, 0.0, 0.0])
W = np.array([0.0, 1.0, 0.0, 0.0])


def _seed_calls(store) -> None:
    """The seed's vector-backend calls, in the backend's default scope."""
    store.add("k1", V, {"value": "paris"})
    store.add("k2", W, {"value": "rome"})
    [(key, score), *_] = store.search(np.array([0.9, 0.1, 0.0, 0.0]), top_k=2)
    assert key == "k1"
    assert 0.9 < score <= 1.0
    store.delete("k1")
    assert [k for k, _ in store.search(V, top_k=2)] == ["k2"]
    store.clear()
    assert store.search(V, top_k=2) == []


# -- Chroma ----------------------------------------------------------------------------


def test_chroma_seed_keywords_are_ephemeral_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ChromaBackend(collection_name=unique("seed"))
    assert store.persist_directory is None
    _seed_calls(store)
    assert list(tmp_path.iterdir()) == []  # nothing written to disk
    assert ChromaBackend().persist_directory is None  # the seed's ChromaBackend()


def test_chroma_seed_persist_directory_keeps_the_collection(tmp_path):
    name = unique("persist")
    folder = str(tmp_path / "chroma")
    first = ChromaBackend(collection_name=name, persist_directory=folder)
    first.add("k1", V)
    assert first.persist_directory == folder
    # Opened again (positionally, as the seed allowed): the records are still there.
    again = ChromaBackend(name, folder)
    assert [k for k, _ in again.search(V)] == ["k1"]
    # This package's names address the same collection.
    assert [k for k, _ in ChromaBackend(path=folder, collection=name).search(V)] == ["k1"]


def test_chroma_names_given_twice_fail():
    with pytest.raises(TypeError, match="collection_name= or collection="):
        ChromaBackend(collection_name="a-b-c", collection="d-e-f")
    with pytest.raises(TypeError, match="persist_directory= or path="):
        ChromaBackend(persist_directory="/tmp/x", path="/tmp/y")


# -- Qdrant ----------------------------------------------------------------------------


def test_qdrant_seed_keywords_in_memory():
    store = QdrantBackend(url=":memory:", collection="omnicache", api_key=None, dim=4)
    assert store.count() == 0  # the collection exists from the start (dim given)
    _seed_calls(store)
    positional = QdrantBackend(":memory:", "omnicache", None, 4)  # the seed's order
    _seed_calls(positional)
    default = QdrantBackend()  # the seed's default: in memory
    default.add("k", V)
    assert [k for k, _ in default.search(V)] == ["k"]


def test_qdrant_never_recreates_an_existing_collection(tmp_path):
    folder = str(tmp_path / "qdrant")
    first = QdrantBackend(path=folder, collection="answers", dim=4)
    first.add("k1", V)
    first.close()
    # The seed re-created the collection here and lost every vector.
    again = QdrantBackend(path=folder, collection="answers", dim=4)
    assert [k for k, _ in again.search(V)] == ["k1"]
    again.close()
    with pytest.raises(ConfigError, match="'answers' holds 4-d vectors, got 8-d"):
        QdrantBackend(path=folder, collection="answers", dim=8)
    kept = QdrantBackend(QdrantConfig(path=folder, collection="answers"))
    assert kept.count() == 1
    kept.close()


def test_qdrant_config_and_seed_arguments_do_not_mix():
    with pytest.raises(TypeError, match="not both"):
        QdrantBackend(QdrantConfig(location=":memory:"), collection="x")
    with pytest.raises(TypeError, match="url= or path="):
        QdrantBackend(url=":memory:", path="/tmp/q")
    with pytest.raises(TypeError, match="url given twice"):
        QdrantBackend(":memory:", url=":memory:")
    with pytest.raises(ValueError, match="dim"):
        QdrantBackend(dim=0)


def test_weaviate_and_pinecone_are_refused_naming_the_replacement():
    for name in ("WeaviateBackend", "PineconeBackend"):
        with pytest.raises(ImportError, match="use QdrantBackend or ChromaBackend"):
            exec(f"from omnicache_cluster.backends.vector import {name}", {})  # noqa: S102
