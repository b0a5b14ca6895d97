"""Shared fixtures: tiny models and data built on the spot (nothing is downloaded)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Tests run offline: Hugging Face libraries must never try the hub (on a machine without
# network that is a hang until a DNS or connect timeout, not a quick error). Set before
# any test module imports transformers or datasets, which read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
from hypothesis import HealthCheck, settings

# A loaded 2-core CI machine stalls now and then: no property test may fail for its speed.
# Tests that set their own @settings still inherit what they do not override.
settings.register_profile("bolt", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bolt")


@pytest.fixture(scope="session")
def tiny_latents(tmp_path_factory):
    """Embedded-world corpora chunked by `bolt chunk` (several sentences per chunk), with oracle latents."""
    from bolt.apps.world.world import WorldConfig, write_world
    from bolt.core.chunking import ChunkConfig, chunk_stage
    from bolt.teachers import make_teacher
    from bolt.teachers.synthesize import SynthesizeConfig, synthesize_stage

    directory = tmp_path_factory.mktemp("world")
    world = WorldConfig(warm_documents=8, bootstrap_documents=4, heldout_documents=2, questions=6)
    paths = write_world(directory / "world", world, seed=0)
    chunk_stage(paths["warm"], directory / "warm.chunks.jsonl", ChunkConfig(prefix_chunks=1, mean_units=4))
    chunk_stage(paths["bootstrap"], directory / "bootstrap.chunks.jsonl", ChunkConfig(prefix_chunks=3, mean_units=4))
    synthesize_stage(
        make_teacher("oracle"), directory / "warm.chunks.jsonl", directory / "warm.latents.jsonl", SynthesizeConfig()
    )
    return {
        **paths,
        "warm_latents": directory / "warm.latents.jsonl",
        "bootstrap_chunks": directory / "bootstrap.chunks.jsonl",
    }


@pytest.fixture(scope="session")
def tiny_trained_model(tiny_latents, tmp_path_factory):
    """The tiny preset trained for a few steps on world latents: an HF directory with the markers."""
    from bolt.train.training import TrainConfig, train

    output = tmp_path_factory.mktemp("model") / "warm"
    train(TrainConfig(model="tiny", seq_len=128, batch_size=4, steps=6, lr=3e-3), tiny_latents["warm_latents"], output)
    return output


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for one test module; its workers import bolt and the test modules from this checkout."""
    ray = pytest.importorskip("ray")
    from pathlib import Path

    import bolt

    paths = [str(Path(bolt.__file__).resolve().parents[1]), str(Path(__file__).parent)]
    env = {"PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
