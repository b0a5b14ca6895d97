"""Training layouts: render documents to token ids, then parse them back by their markers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bolt.core.layouts import Layout, TokenizedDocument, encode, render, tokenize_document
from bolt.core.modeling import preset_model
from bolt.core.records import Chunk, Document
from bolt.core.special_tokens import LATENT_TOKENS, MarkerIds, add_latent_tokens, marker_ids
from bolt.errors import BoltError


@pytest.fixture(scope="module")
def tokenizer():
    model, tokenizer = preset_model("tiny")
    add_latent_tokens(tokenizer, model)
    return tokenizer


@pytest.fixture(scope="module")
def markers(tokenizer) -> MarkerIds:
    m = marker_ids(tokenizer)
    assert m.bos is not None
    return m


SPECIAL_STRINGS = (*LATENT_TOKENS, "<s>", "</s>", "<pad>")
pieces = st.text(max_size=30).filter(lambda s: not any(special in s for special in SPECIAL_STRINGS))


@st.composite
def latent_documents(draw, synthetic: bool | None = None):
    n = draw(st.integers(1, 5))
    chunks = [Chunk(text=draw(pieces), prefix=draw(pieces), latent=draw(pieces)) for _ in range(n)]
    meta = {"source": "test"}
    if synthetic if synthetic is not None else draw(st.booleans()):
        meta["synthetic"] = draw(pieces)
    return Document(id="doc", chunks=chunks, meta=meta)


def parse(ids: list[int], layout: Layout, m: MarkerIds, decode) -> list[tuple[Layout, str, str | None]] | str:
    """Invert ``render``: the chunks as (form, text, latent), or the whole body for raw and pure."""
    assert ids[0] == m.bos and ids[-1] == m.eos
    body = ids[1:-1]
    assert m.bos not in body and m.eos not in body
    if layout in (Layout.RAW, Layout.PURE):
        assert not set(m.latent_ids) & set(body)
        return decode(body)
    position = 0

    def expect(token: int) -> None:
        nonlocal position
        assert body[position] == token, (position, body)
        position += 1

    def until_marker() -> str:
        nonlocal position
        start = position
        while position < len(body) and body[position] not in m.latent_ids:
            position += 1
        return decode(body[start:position])

    chunks = []
    while position < len(body):
        form = layout
        if layout is Layout.RANDOM:
            assert body[position] == m.sol
            form = {m.prior: Layout.JOINT, m.eol: Layout.POSTERIOR}[body[position + 1]]
        if form is Layout.JOINT:
            expect(m.sol), expect(m.prior)
            z = until_marker()
            expect(m.eol)
            x = until_marker()
        elif form is Layout.POSTERIOR:
            expect(m.sol), expect(m.eol)
            x = until_marker()
            expect(m.sol), expect(m.post)
            z = until_marker()
            expect(m.eol)
        elif form is Layout.PRIOR_ONLY:
            expect(m.sol)
            z = until_marker()
            expect(m.eol)
            x = until_marker()
        elif form is Layout.POSTERIOR_ONLY:
            x = until_marker()
            expect(m.sol)
            z = until_marker()
            expect(m.eol)
        chunks.append((form, x, z))
    return chunks


STRUCTURED = [Layout.JOINT, Layout.POSTERIOR, Layout.PRIOR_ONLY, Layout.POSTERIOR_ONLY, Layout.RANDOM]


def test_every_layout_is_covered():
    assert set(Layout) == {*STRUCTURED, Layout.RAW, Layout.PURE}
    assert [layout for layout in Layout if not layout.needs_latents] == [Layout.RAW]


@settings(max_examples=60, deadline=None)
@given(document=latent_documents(), layout=st.sampled_from(list(Layout)), seed=st.integers(0, 2**32))
def test_render_parses_back(tokenizer, markers, document, layout, seed):
    tokenized = tokenize_document(tokenizer, document, with_latents=layout.needs_latents)
    ids = render(tokenized, layout, markers, np.random.default_rng(seed))
    assert ids == render(tokenized, layout, markers, np.random.default_rng(seed))
    parsed = parse(ids, layout, markers, tokenizer.decode)
    texts = [chunk.text for chunk in document.chunks]
    latents = [chunk.latent for chunk in document.chunks]
    if layout is Layout.RAW:
        assert parsed == "".join(texts)
    elif layout is Layout.PURE:
        assert parsed == document.meta.get("synthetic", "".join(latents))
    else:
        assert [x for _, x, _ in parsed] == texts
        assert [z for _, _, z in parsed] == latents
        allowed = {Layout.JOINT, Layout.POSTERIOR} if layout is Layout.RANDOM else {layout}
        assert {form for form, _, _ in parsed} <= allowed


@settings(max_examples=30, deadline=None)
@given(document=latent_documents(synthetic=False))
def test_raw_needs_no_latents_and_ignores_them(tokenizer, markers, document):
    without = Document(id=document.id, chunks=[Chunk(c.text, c.prefix) for c in document.chunks])
    plain = tokenize_document(tokenizer, without, with_latents=False)
    assert plain.latents is None
    ids = render(plain, Layout.RAW, markers, np.random.default_rng(0))
    assert ids == render(
        tokenize_document(tokenizer, document, with_latents=True), Layout.RAW, markers, np.random.default_rng(0)
    )
    assert parse(ids, Layout.RAW, markers, tokenizer.decode) == document.text


def test_pieces_are_joined_as_ids_not_strings(tokenizer, markers):
    # two chunk texts that would spell a marker if joined as strings first
    document = Document(id="d", chunks=[Chunk("text <|START_OF_"), Chunk("LATENT|> more")])
    ids = render(
        tokenize_document(tokenizer, document, with_latents=False), Layout.RAW, markers, np.random.default_rng(0)
    )
    assert markers.sol not in ids
    assert tokenizer.decode(ids[1:-1]) == "text <|START_OF_LATENT|> more"


def test_joint_and_posterior_exact_ids(tokenizer, markers):
    m = markers
    document = Document(id="d", chunks=[Chunk("ab", latent="z"), Chunk("c", latent="")])
    tokenized = tokenize_document(tokenizer, document, with_latents=True)
    a, b, c, z = (ord(ch) for ch in "abcz")
    assert render(tokenized, Layout.JOINT, m, np.random.default_rng(0)) == [
        m.bos,
        m.sol,
        m.prior,
        z,
        m.eol,
        a,
        b,
        m.sol,
        m.prior,
        m.eol,
        c,
        m.eos,
    ]
    assert render(tokenized, Layout.POSTERIOR, m, np.random.default_rng(0)) == [
        m.bos,
        m.sol,
        m.eol,
        a,
        b,
        m.sol,
        m.post,
        z,
        m.eol,
        m.sol,
        m.eol,
        c,
        m.sol,
        m.post,
        m.eol,
        m.eos,
    ]


def test_no_bos_when_the_tokenizer_has_none(tokenizer, markers):
    no_bos = MarkerIds(markers.sol, markers.eol, markers.prior, markers.post, bos=None, eos=markers.eos)
    tokenized = TokenizedDocument(id="d", texts=[[1, 2]], latents=[[3]])
    assert render(tokenized, Layout.PRIOR_ONLY, no_bos, np.random.default_rng(0)) == [
        no_bos.sol,
        3,
        no_bos.eol,
        1,
        2,
        no_bos.eos,
    ]
    assert render(tokenized, Layout.POSTERIOR_ONLY, no_bos, np.random.default_rng(0)) == [
        1,
        2,
        no_bos.sol,
        3,
        no_bos.eol,
        no_bos.eos,
    ]


# --- the random layout's coins ----------------------------------------------------------


@pytest.fixture(scope="module")
def long_tokenized(tokenizer) -> TokenizedDocument:
    document = Document(id="long", chunks=[Chunk(f"x{i}", latent=f"z{i}") for i in range(1000)])
    return tokenize_document(tokenizer, document, with_latents=True)


def forms(ids, markers, tokenizer) -> list[Layout]:
    return [form for form, _, _ in parse(ids, Layout.RANDOM, markers, tokenizer.decode)]


def test_random_layout_is_about_half_joint(tokenizer, markers, long_tokenized):
    picked = forms(render(long_tokenized, Layout.RANDOM, markers, np.random.default_rng(0)), markers, tokenizer)
    assert len(picked) == 1000
    joint = picked.count(Layout.JOINT) / len(picked)
    assert 0.44 < joint < 0.56
    # coins are independent per chunk, not one coin for the document
    changes = sum(a != b for a, b in itertools.pairwise(picked))
    assert 400 < changes < 600


def test_random_layout_redraws_per_epoch_and_repeats_per_seed(tokenizer, markers, long_tokenized):
    epochs = [render(long_tokenized, Layout.RANDOM, markers, np.random.default_rng([7, epoch])) for epoch in range(3)]
    assert len({tuple(ids) for ids in epochs}) == 3
    assert render(long_tokenized, Layout.RANDOM, markers, np.random.default_rng([7, 1])) == epochs[1]
    # one generator over several epochs also draws new coins each time
    rng = np.random.default_rng(3)
    assert render(long_tokenized, Layout.RANDOM, markers, rng) != render(long_tokenized, Layout.RANDOM, markers, rng)


# --- mixing in raw text ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", [layout for layout in Layout if layout is not Layout.RAW])
def test_raw_ratio_one_always_renders_raw(tokenizer, markers, layout):
    document = Document(
        id="d", chunks=[Chunk("One. ", latent="why"), Chunk("Two.", latent="because")], meta={"synthetic": "syn"}
    )
    tokenized = tokenize_document(tokenizer, document, with_latents=True)
    raw = render(tokenized, Layout.RAW, markers, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert render(tokenized, layout, markers, rng, raw_ratio=1.0) == raw


def test_raw_ratio_zero_never_renders_raw_and_fractions_in_between(tokenizer, markers):
    document = Document(id="d", chunks=[Chunk("One. ", latent="why"), Chunk("Two.", latent="because")])
    tokenized = tokenize_document(tokenizer, document, with_latents=True)
    raw = render(tokenized, Layout.RAW, markers, np.random.default_rng(0))
    rng = np.random.default_rng(2)
    for layout in (Layout.RANDOM, Layout.JOINT, Layout.PURE):
        assert all(render(tokenized, layout, markers, rng, raw_ratio=0.0) != raw for _ in range(200))
    rng = np.random.default_rng(3)
    raw_share = sum(render(tokenized, Layout.JOINT, markers, rng, raw_ratio=0.3) == raw for _ in range(2000)) / 2000
    assert 0.25 < raw_share < 0.35


# --- latents given as ids ---------------------------------------------------------------------


def test_latent_token_ids_are_used_instead_of_the_text(tokenizer, markers):
    stored = encode(tokenizer, "sampled")
    document = Document(
        id="d",
        chunks=[
            Chunk("First.", latent="re-tokenises differently", extra={"latent_token_ids": stored}),
            Chunk(" Second.", latent="plain"),
        ],
    )
    tokenized = tokenize_document(tokenizer, document, with_latents=True)
    assert tokenized.latents == [stored, encode(tokenizer, "plain")]
    parsed = parse(
        render(tokenized, Layout.JOINT, markers, np.random.default_rng(0)), Layout.JOINT, markers, tokenizer.decode
    )
    assert parsed == [(Layout.JOINT, "First.", "sampled"), (Layout.JOINT, " Second.", "plain")]
    # without latents the stored ids play no part
    assert tokenize_document(tokenizer, document, with_latents=False).latents is None


def test_synthetic_must_be_text_to_be_used(tokenizer, markers):
    document = Document(
        id="d", chunks=[Chunk("x", latent="a"), Chunk("y", latent="b")], meta={"synthetic": ["not", "text"]}
    )
    tokenized = tokenize_document(tokenizer, document, with_latents=True)
    assert tokenized.synthetic is None
    assert (
        parse(render(tokenized, Layout.PURE, markers, np.random.default_rng(0)), Layout.PURE, markers, tokenizer.decode)
        == "ab"
    )


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [layout for layout in Layout if layout.needs_latents])
def test_latent_layouts_need_latents(tokenizer, markers, layout):
    document = Document(id="plain-doc", chunks=[Chunk("just text")])
    tokenized = tokenize_document(tokenizer, document, with_latents=False)
    with pytest.raises(BoltError, match="'plain-doc' has no latents"):
        render(tokenized, layout, markers, np.random.default_rng(0))


def test_text_token_count(tokenizer):
    document = Document(id="d", chunks=[Chunk("héllo", latent="ignored"), Chunk("", latent="z")])
    assert tokenize_document(tokenizer, document, with_latents=True).n_text_tokens == len("héllo".encode())
    assert encode(tokenizer, "") == []
