"""Near and exact dedup: recall and false drops at controlled Jaccard similarity, and the index's files."""
import numpy as np
import pytest

from pipeline.dedup import Deduplicator, digest, index_bytes, sketch
from pipeline.errors import PipelineError
from pipeline.wordscan import scan

PERMUTATIONS, BANDS, ROWS, THRESHOLD = 128, 14, 8, 0.75  # params.yaml's filter block


def deduplicator(directory, capacity=10_000) -> Deduplicator:
    return Deduplicator(directory, capacity, PERMUTATIONS, BANDS, ROWS, THRESHOLD)


def keys(text: str):
    scanned = scan(text, 13)
    return digest(scanned.key), sketch(scanned.shingles, PERMUTATIONS, BANDS, ROWS), scanned.shingles


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exactly, on the 5-word shingles the filter hashes (pipeline.wordscan)."""
    a, b = set(a.tolist()), set(b.tolist())
    return len(a & b) / len(a | b)


def document(rng, vocabulary, words: int) -> list[str]:
    return list(rng.choice(vocabulary, words))


def edited(rng, vocabulary, words: list[str], edits: int) -> list[str]:
    """A copy with `edits` words replaced at random places (one edit changes up to 5 shingles)."""
    copy = list(words)
    for position in rng.choice(len(copy), size=edits, replace=False):
        copy[position] = rng.choice(vocabulary)
    return copy


def pairs(rng, vocabulary, low: float, high: float, count: int) -> list[tuple[str, str, float]]:
    """`count` pairs of documents of 60-400 words whose exact Jaccard similarity is in [low, high]: the number
    of edits is aimed at a similarity drawn in the range, and a pair that lands outside it is left out."""
    found = []
    while len(found) < count:
        words = document(rng, vocabulary, int(rng.integers(60, 401)))
        target = rng.uniform(low, high)
        shingles = len(words) - 4
        edits = max(1, min(len(words), round(shingles * (1 - target) / (1 + target) / 5 * 1.1)))
        copy = edited(rng, vocabulary, words, edits)
        similarity = jaccard(scan(" ".join(words), 13).shingles, scan(" ".join(copy), 13).shingles)
        if low <= similarity <= high:
            found.append((" ".join(words), " ".join(copy), similarity))
    return found


@pytest.fixture(scope="module")
def vocabulary():
    rng = np.random.default_rng(7)
    syllables = ["ka", "le", "mi", "sor", "tun", "ba", "çe", "dı", "gü", "şa", "yol", "ev", "ner", "ip", "ök"]
    return np.array(sorted({"".join(rng.choice(syllables, rng.integers(1, 5))) for _ in range(30_000)}))


def flagged(tmp_path, found: list[tuple[str, str, float]]) -> list[bool]:
    """Whether each pair's copy is dropped as a duplicate of its original: the first half's originals are in the
    index (committed and applied), the second half's in the shard being filtered, so both paths are measured."""
    dedup = deduplicator(tmp_path, capacity=2 * len(found) + 10)
    half = len(found) // 2
    for original, _, _ in found[:half]:
        assert dedup.check_and_add(*keys(original)[:2]) is None  # unrelated originals: none is a duplicate
    dedup.commit(tmp_path / "journal.npz")
    dedup.apply(tmp_path / "journal.npz")
    results = []
    for i, (original, copy, _) in enumerate(found):
        if i >= half:
            assert dedup.check_and_add(*keys(original)[:2]) is None
        results.append(dedup.check_and_add(*keys(copy)[:2]) == "near_duplicate")
    return results


def test_near_duplicates_at_jaccard_085_and_above_are_found(tmp_path, vocabulary):
    """Pairs from J = 0.85 (the hardest) up to 0.92: at least 95 % must be dropped (expected: ~99 %)."""
    found = pairs(np.random.default_rng(1), vocabulary, 0.85, 0.92, 800)
    results = flagged(tmp_path, found)
    assert np.mean(results) >= 0.95
    hardest = [flag for flag, (_, _, similarity) in zip(results, found) if similarity < 0.87]
    assert len(hardest) >= 100 and np.mean(hardest) >= 0.95


def test_documents_at_jaccard_06_and_below_are_not_dropped(tmp_path, vocabulary):
    """At most 1 % false drops at J <= 0.6, although banding alone makes many of these pairs candidates: the
    stored signatures are what turns them down."""
    found = pairs(np.random.default_rng(2), vocabulary, 0.45, 0.6, 800)
    assert np.mean(flagged(tmp_path, found)) <= 0.01
    sharing_a_band = [bool(set(keys(a)[1].bands.tolist()) & set(keys(b)[1].bands.tolist())) for a, b, _ in found]
    assert np.mean(sharing_a_band) > 0.05  # candidates that verification turned down


def test_one_word_edit_is_a_near_duplicate_and_a_reflowed_copy_an_exact_one(tmp_path, vocabulary):
    rng = np.random.default_rng(3)
    words = document(rng, vocabulary, 300)
    dedup = deduplicator(tmp_path)
    assert dedup.check_and_add(*keys(" ".join(words))[:2]) is None
    assert dedup.check_and_add(*keys(" ".join(edited(rng, vocabulary, words, 1)))[:2]) == "near_duplicate"
    assert dedup.check_and_add(*keys("\n".join(words) + " ")[:2]) == "exact_duplicate"
    assert dedup.check_and_add(*keys(" ".join(document(rng, vocabulary, 300)))[:2]) is None


def test_the_index_is_memory_mapped_files_sized_from_the_row_count(tmp_path, vocabulary):
    """RAM does not grow with the corpus: the index is files of a fixed size, mapped; what the shard holds in
    memory is emptied at each commit."""
    rng = np.random.default_rng(4)
    dedup = deduplicator(tmp_path, capacity=5000)
    sizes = {path.name: path.stat().st_size for path in tmp_path.glob("*.npy")}
    assert sum(sizes.values()) == pytest.approx(index_bytes(5000, PERMUTATIONS, BANDS), rel=0.01)
    for shard in range(3):
        for _ in range(200):
            dedup.check_and_add(*keys(" ".join(document(rng, vocabulary, 80)))[:2])
        dedup.commit(tmp_path / f"journal-{shard}.npz")
        assert not dedup._shard_signatures and not dedup._shard_exact
        dedup.apply(tmp_path / f"journal-{shard}.npz")
    assert {path.name: path.stat().st_size for path in tmp_path.glob("*.npy")} == sizes
    assert all(isinstance(array, np.memmap) for array in dedup._files)
    assert all(np.shares_memory(view, mapped) for view, mapped in
               zip((dedup._exact, dedup._tables, dedup._signatures), dedup._files))
    assert dedup.indexed == 600


def test_a_shard_enters_the_index_only_when_applied_and_applying_twice_changes_nothing(tmp_path, vocabulary):
    rng = np.random.default_rng(5)
    texts = [" ".join(document(rng, vocabulary, 120)) for _ in range(50)]
    dedup = deduplicator(tmp_path)
    assert [dedup.check_and_add(*keys(text)[:2]) for text in texts] == [None] * 50
    dedup.commit(tmp_path / "journal.npz")
    restarted = deduplicator(tmp_path)  # killed before apply: the shard is not in the index
    assert restarted.check_and_add(*keys(texts[0])[:2]) is None
    restarted = deduplicator(tmp_path)
    restarted.apply(tmp_path / "journal.npz")
    before = {path.name: path.read_bytes() for path in tmp_path.glob("*.npy")}
    restarted.apply(tmp_path / "journal.npz")  # again, as after a kill in the middle of apply
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.npy")} == before
    reopened = deduplicator(tmp_path)
    assert reopened.indexed == 50
    assert [reopened.check_and_add(*keys(text)[:2]) for text in texts[:3]] == ["exact_duplicate"] * 3
    assert reopened.check_and_add(*keys(" ".join(edited(rng, vocabulary, texts[3].split(), 1)))[:2]) == \
        "near_duplicate"
    new = " ".join(document(rng, vocabulary, 120))
    assert reopened.check_and_add(*keys(new)[:2]) is None
    reopened.commit(tmp_path / "journal-2.npz")
    with np.load(tmp_path / "journal-2.npz") as saved:
        assert saved["ids"].tolist() == [50]  # ids go on after the indexed rows


def test_same_rows_give_the_same_drops_and_the_same_files(tmp_path, vocabulary):
    rng = np.random.default_rng(6)
    texts = [" ".join(document(rng, vocabulary, 100)) for _ in range(100)]
    texts += [" ".join(edited(rng, vocabulary, text.split(), 1)) for text in texts[:30]] + texts[30:40]
    runs = []
    for run in ("a", "b"):
        dedup = deduplicator(tmp_path / run)
        verdicts = []
        for shard in range(2):
            verdicts += [dedup.check_and_add(*keys(text)[:2]) for text in texts[shard::2]]
            dedup.commit(tmp_path / run / f"journal-{shard}.npz")
            dedup.apply(tmp_path / run / f"journal-{shard}.npz")
        runs.append((verdicts, {p.name: p.read_bytes() for p in (tmp_path / run).iterdir()}))
    assert runs[0] == runs[1]
    assert runs[0][0].count("near_duplicate") >= 29 and runs[0][0].count("exact_duplicate") == 10


def test_banding_that_does_not_fit_the_permutations_names_the_params(tmp_path):
    with pytest.raises(PipelineError, match="filter.minhash_bands"):
        Deduplicator(tmp_path, 10, permutations=64, bands=14, rows=8, threshold=0.75)
