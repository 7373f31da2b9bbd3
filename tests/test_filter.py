"""Quality rules, the word scan, the filter's per-row judgement and split, on texts written for these tests
(the language decision: tests/test_language.py; the dedup index: tests/test_dedup.py)."""
import pytest

from collections import Counter

from pipeline.decontaminate import Contamination, ngram_hashes
from pipeline.dedup import Deduplicator, band_hashes, minhash
from pipeline.judge import Judge, dedup_text, is_validation, normalised
from pipeline.language import TurkishDetector
from pipeline.quality import failed_chat_rule, failed_rule
from pipeline.text import dedup_key, normalise, turkish_casefold
from pipeline.wordscan import SYMBOL, scan
from stages.filter import filter_rows

TURKISH = ("Dün akşam arkadaşlarımla birlikte sahilde uzun bir yürüyüş yaptık. Hava serindi ama deniz çok "
           "sakindi. Dönüşte küçük bir lokantada balık yedik ve gece geç saatte eve döndük.")
TURKISH_MORE = ("Sabah erkenden kalkıp kahvaltı hazırladık. Annem taze ekmek almak için fırına gitti, babam da "
                "çayı demledi. Kahvaltıdan sonra hep birlikte bahçedeki ağaçları suladık ve öğleye kadar kitap okuduk.")
AZERBAIJANI = ("Dünən axşam dostlarımla birlikdə sahildə uzun bir gəzinti etdik. Hava sərin idi, amma dəniz çox "
               "sakit idi. Qayıdarkən kiçik bir restoranda balıq yedik və gecə gec saatda evə qayıtdıq.")
TURKMEN = ("Düýn agşam dostlarym bilen deňiz kenarynda uzak gezelenç etdik. Howa salkyndy, emma deňiz örän asuda "
           "boldy. Gaýdyp gelýärkäk kiçijik bir restoranda balyk iýdik we gijä galyp öýe geldik.")
CRIMEAN_TATAR = ("Keçe aqşam dostlarım ile deñiz boyunda uzun bir gezinti yaptıq. Hava serin edi, amma deñiz pek "
                 "sakin edi. Qaytqanda kiçik bir aşhanede balıq aşadıq ve gece keç evge qayttıq.")
UZBEK = ("Kecha kechqurun doʻstlarim bilan dengiz boʻyida uzoq sayr qildik. Havo salqin edi, lekin dengiz juda "
         "tinch edi. Qaytishda kichik bir restoranda baliq yedik va kechasi kech uyga qaytdik.")
KURMANJI = ("Duh êvarê ez û hevalên xwe li ber deryayê geriyan. Hewa sar bû, lê derya pir aram bû. Di vegerê de "
            "me li xwaringeheke biçûk masî xwar û şevê dereng vegeriyan malê.")
ENGLISH = ("Last night my friends and I took a long walk along the beach. The air was cool but the sea was very "
           "calm. On the way back we ate fish at a small restaurant and got home late.")


@pytest.fixture(scope="module")
def lingua():
    return TurkishDetector(lingua_rules())


def deduplicator(directory, capacity=1000) -> Deduplicator:
    return Deduplicator(directory, capacity, permutations=128, bands=14, rows=8, threshold=0.75)


def test_minhash_is_datasketchs_over_the_shingle_hashes():
    import numpy as np
    from datasketch import MinHash

    shingles = scan(TURKISH, 13).shingles
    reference = MinHash(num_perm=128, seed=1, hashfunc=int, scheme="affine32")
    reference.update_batch((shingles >> np.uint64(32)).tolist())
    assert (minhash(shingles, 128) == reference.hashvalues).all()
    other = scan(TURKISH_MORE, 13).shingles
    assert (minhash(other, 128) != reference.hashvalues).any()  # the reused sketch was cleared


def test_band_keys_of_distinct_signatures_do_not_collide():
    """MinHash values are minima (small numbers): keys that merely sum a band's values, as datasketch's
    BloomTable does, collide and drop unique documents as near duplicates."""
    import numpy as np

    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32 // 300, size=(50_000, 128), dtype=np.uint64).astype(np.uint32)
    keys = np.stack([band_hashes(signature, 9, 13) for signature in signatures])
    assert all(len(np.unique(keys[:, band])) == len(signatures) for band in range(9))
    plain_sums = signatures[:, :13].astype(np.uint64).sum(axis=1)
    assert len(np.unique(plain_sums)) < len(signatures)  # what the test guards against


def test_short_chat_turns_of_a_neighbour_add_up_to_not_turkish(lingua):
    """Each short Turkmen turn holds too few letters to tell on its own; read together they are enough."""
    short_turns = ["Biz düýn agşam deňiz kenarynda gezdik.", "Kiçijik bir restoranda balyk iýdik.",
                   "Gijä galyp öýe geldik."]
    assert lingua.decide([TURKISH, TURKISH_MORE]).turkish
    assert not lingua.decide(short_turns).turkish
    assert not lingua.decide([TURKISH, TURKMEN]).turkish


def lingua_rules(**changes):
    from pipeline.params import load
    from tests.tiny import REPO

    return load(REPO / "params.yaml").filter.model_copy(update=changes)


def test_turkish_case_folding_and_nfc():
    assert turkish_casefold("IĞDIR İZMİR") == "ığdır izmir"
    assert turkish_casefold("ΟΔΟΣ ΣΟΦΙΑ") == "οδοσ σοφια"  # final sigma as str.casefold has it, not lower()'s ς
    assert "İ".lower() != "i"  # why str.lower is not enough
    decomposed = "S\u0327eker"  # S + combining cedilla
    assert normalise(decomposed) == "Şeker"
    assert dedup_key("İZMİR   ılık\n") == dedup_key("izmir ILIK")


@pytest.mark.parametrize("text,rule", [
    ("Çok kısa bir metin.", "word_count"),
    ("a b c d e f g h i j k l m n o p r s t u v y z a b c", "mean_word_length"),
    (TURKISH + " #### $$$$ @@@@ {{{{ }}}} |||| ^^^^ ~~~~ &&&& %%%% ++++ ==== <<<< >>>> ////", "symbol_ratio"),
    (TURKISH + " 1234567890 0987654321 1122334455 6677889900 1212121212 3434343434 5656565656", "digit_ratio"),
    (TURKISH + " Bu site çerezleri kabul etmenizi ister.", "boilerplate"),
    (" ".join(["satılık daire"] * 20), "top_ngram_repetition"),
    ("\n".join([TURKISH, "Ana Sayfa menüsü burada yer alır", "Ana Sayfa menüsü burada yer alır",
                "Ana Sayfa menüsü burada yer alır"]), "duplicate_lines"),
    ("\n\n".join([TURKISH, TURKISH_MORE, "Bir paragraf.\nİki satırlık.", TURKISH_MORE]), "duplicate_paragraphs"),
    ("\n".join(["Ana sayfa bağlantısı burada duruyor", "Kampanyalı ürünler ve fırsatlar listesi",
                "Kadın giyim ayakkabı çanta modelleri", "Erkek saat kemer cüzdan çeşitleri",
                "Çocuk oyuncak kitap kırtasiye malzemeleri", "Ev dekorasyon mutfak banyo aksesuarları"]),
     "punctuated_lines"),
])
def test_each_quality_rule_drops_its_case(params, text, rule):
    assert failed_rule(text, params.filter) == rule


def test_character_counts_match_their_plain_definitions():
    """The compiled scan counts what the plain definitions count, on random text from ASCII, Turkish and other
    letters, combining marks, symbols, emoji and stray surrogates."""
    import random

    rng = random.Random(0)
    alphabet = [chr(c) for c in [*range(0, 0x250), *range(0x300, 0x370), *range(0x2000, 0x2070), 0xD800, 0xDFFF,
                                 *range(0x1F600, 0x1F650)]] + list("ğüşıöçĞÜŞİÖÇ0123456789 \n\t") * 20
    for _ in range(3000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 80)))
        visible = max(len(text) - sum(map(text.count, " \n\t")), 1)
        expected = (visible, len(SYMBOL.findall(text)), sum(map(text.count, "0123456789")))
        scanned = scan(text, 13)
        assert (scanned.visible, scanned.symbols, scanned.digits) == expected, repr(text)


def test_folding_keeps_every_character_in_its_class():
    """Why the scan may fold a text one code point at a time and judge its words by the unfolded characters:
    Turkish case folding maps each code point to one code point of the same class (space, stripped punctuation,
    symbol, digit), over all of Unicode; and the tables say what str.isspace, PUNCTUATION, SYMBOL and
    turkish_casefold say."""
    import sys

    from pipeline.text import PUNCTUATION
    from pipeline.wordscan import SPACE, STRIPPED, SYMBOLIC, tables

    table, folds = tables()

    def kind(character: str) -> int:
        return (SPACE * character.isspace() + STRIPPED * (character in PUNCTUATION)
                + SYMBOLIC * (SYMBOL.fullmatch(character) is not None))

    for code in range(sys.maxunicode + 1):
        character = chr(code)
        assert table[code] == kind(character), hex(code)
        folded = turkish_casefold(character)
        assert folds[code] == ord(folded), hex(code)
        assert len(folded) == 1 and kind(folded) == kind(character)
        assert (folded in "0123456789") == (character in "0123456789")


def _scan_by_definition(text: str, n: int) -> tuple:
    """What pipeline.wordscan.scan computes, in plain Python: pipeline.text.words of the Turkish-folded text,
    Counter's most common bigram (first seen on ties), the polynomial hash of each n-gram's UTF-8 and the
    character counts."""
    from collections import Counter

    from pipeline.text import words
    from pipeline.wordscan import BASE, SHINGLE_WORDS

    def polynomial(gram: list[str]) -> int:
        return sum(byte * pow(BASE, k, 2**64) for k, byte in enumerate(" ".join(gram).encode("utf-8", "surrogatepass")))

    def hashes(width: int) -> list[int]:
        return [polynomial(tokens[i : i + width]) % 2**64 for i in range(len(tokens) - width + 1)]

    tokens = words(turkish_casefold(text))
    top = 0
    if len(tokens) >= 4:
        (first, second), count = Counter(zip(tokens, tokens[1:])).most_common(1)[0]
        top = count * (len(first) + len(second))
    shingles = hashes(min(SHINGLE_WORDS, len(tokens))) if tokens else [0]
    counts = (max(len(text) - sum(map(text.count, " \n\t")), 1), len(SYMBOL.findall(text)),
              sum(map(text.count, "0123456789")))
    return (" ".join(tokens).encode("utf-8", "surrogatepass"), len(tokens), sum(map(len, tokens)), top, *counts,
            shingles, hashes(n) if len(tokens) >= n else [])


def test_word_scan_matches_its_plain_definition():
    """The compiled scan splits, strips, counts and hashes exactly as the plain Python it replaced: on random
    Unicode (every character str.split() separates at, every stripped punctuation mark, 2- to 4-byte letters,
    stray surrogates) and on runs of a few repeated words (bigram counts and their ties)."""
    import random
    import sys

    from pipeline.text import PUNCTUATION

    rng = random.Random(0)
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    letters = [chr(c) for c in [*range(0x41, 0x7B), *range(0xC0, 0x250), *range(0x370, 0x3FF), 0x0800, 0x1680,
                                0x2E80, 0xD800, 0xDFFF, 0xFFFF, *range(0x1F600, 0x1F610), 0x10FFFF]]
    alphabet = spaces + list(PUNCTUATION) + letters + list("ğüşıöç0123456789") * 5
    vocabulary = ["bir", "iki", "üç", "dört", "«beş»", "altı,", "Iğdır", "İZMİR", "şeker..."]
    cases = ["", " ", "...", "a", "a b c d", "a b a b a b"]
    cases += ["".join(rng.choices(alphabet, k=rng.randint(0, 60))) for _ in range(2000)]
    cases += [" ".join(rng.choices(vocabulary[: rng.randint(1, 9)], k=rng.randint(0, 30))) for _ in range(2000)]
    for text in cases:
        for n in (1, 3, 13):
            scanned = scan(text, n)
            expected = _scan_by_definition(text, n)
            got = (*scanned[:-2], scanned.shingles.tolist(), scanned.ngrams.tolist())
            assert got == expected, repr(text)


def test_clean_turkish_passes_every_rule(params):
    assert failed_rule(TURKISH, params.filter) is None


def chat(question, answer):
    return {"id": question, "source": "c", "kind": "chat", "text": None, "meta": None,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def judged(rows, params, lingua, contamination, tmp_path) -> tuple[list, Counter, Counter]:
    """The filter in this process: kept (split, row) pairs, drop counts, languages dropped."""
    counts, languages = Counter(), Counter()
    judge = Judge(params.filter, lingua, contamination, (14, 8))
    kept = list(filter_rows(rows, judge, deduplicator(tmp_path), counts, languages))
    return kept, counts, languages


def test_chats_sharing_only_a_long_system_prompt_are_neither_duplicates_nor_contaminated(params, lingua, tmp_path):
    system = ("Sen yardımsever bir asistansın. Kullanıcının sorusunu dikkatle oku, adım adım düşün, cevabını kısa "
              "ve doğru bir Türkçe ile yaz, emin olmadığın bilgileri uydurma ve gerekirse kaynak öner.")
    pairs = [(TURKISH, "Çok güzel bir akşam geçirmişsiniz, sevindim."),
             (TURKISH_MORE, "Harika bir aile sabahı, ellerinize sağlık."),
             ("Geçen yaz ailemle birlikte Karadeniz'e gittik. Yaylalarda yürüyüş yaptık, taze mısır ekmeği yedik ve "
              "akşamları dereden gelen serin rüzgârın tadını çıkardık.", "Karadeniz yaylaları gerçekten çok güzeldir.")]
    rows = [{**chat(q, a), "messages": [{"role": "system", "content": system}, *chat(q, a)["messages"][1:]]}
            for q, a in pairs]
    held_out = {**rows[0], "messages": [rows[0]["messages"][0], {"role": "user", "content": "Bugün hava nasıl?"},
                                        {"role": "assistant", "content": "Bugün hava güneşli ve ılık."}]}
    contamination = Contamination(13)
    contamination.add(dedup_text(normalised(held_out)))  # what evaluation_ngrams adds for a validation chat
    kept, counts, _ = judged(rows, params, lingua, contamination.freeze(), tmp_path)
    assert len(kept) == 3 and counts == {"kept_train": 3}


def test_a_chat_needs_every_user_and_assistant_turn_in_turkish_and_the_language_seen_is_counted(params, lingua,
                                                                                               tmp_path):
    rows = [chat(TURKISH, TURKISH.replace("sahilde", "parkta")), chat(TURKISH.replace("balık", "pilav"), ENGLISH)]
    kept, counts, languages = judged(rows, params, lingua, Contamination(13).freeze(), tmp_path)
    assert [row["id"] for _, row in kept] == [rows[0]["id"]]  # English system prompt is not judged
    assert counts == {"language": 1, "kept_train": 1}
    assert languages == {"en": 1}


def test_validation_split_is_a_stable_function_of_source_and_id():
    rows = [{"source": "web", "id": str(i)} for i in range(2000)]
    chosen = [is_validation(row, 0.1) for row in rows]
    assert chosen == [is_validation(row, 0.1) for row in rows]
    assert 150 < sum(chosen) < 250


def test_decontamination_screen_never_hides_an_evaluation_ngram():
    """The bit-array screen in front of the sorted n-grams may let strangers through to the exact search, never
    stop a real match: every evaluation text and every 13-word window of one is found; unrelated texts are not."""
    import random

    rng = random.Random(0)
    vocabulary = [f"kelime{i}" for i in range(5000)]
    texts = [" ".join(rng.choices(vocabulary, k=60)) for _ in range(500)]
    contamination = Contamination(13)
    for text in texts[:250]:
        contamination.add(text)
    contamination.freeze()
    assert all(contamination.contaminated(ngram_hashes(text, 13)) for text in texts[:250])
    windows = [" ".join(text.split()[start : start + 13]) for text in texts[:250] for start in (0, 20, 47)]
    assert all(contamination.contaminated(ngram_hashes(f"önce {window} sonra", 13)) for window in windows)
    assert not any(contamination.contaminated(ngram_hashes(text, 13)) for text in texts[250:])


def test_an_evaluation_text_with_a_json_escaped_surrogate_is_still_screened():
    question = "Soru: " + TURKISH_MORE + " \ud800"  # what json.loads makes of a "\\ud800" escape in a benchmark file
    contamination = Contamination(13)
    contamination.add(question)
    assert contamination.freeze().contaminated(ngram_hashes(TURKISH_MORE, 13))


def test_boilerplate_markers_match_however_they_are_written(params):
    from pipeline.params import Filter

    rules = Filter.model_validate({**params.filter.model_dump(), "boilerplate_markers": ["Tüm Hakları  SAKLIDIR."]})
    assert rules.boilerplate_markers == ["tüm hakları saklıdır"]
    assert failed_rule(TURKISH + "\nTÜM HAKLARI\nsaklıdır!", rules) == "boilerplate"
    assert failed_rule(TURKISH, rules) is None
    turns = [{"role": "user", "content": "Merhaba"},
             {"role": "assistant", "content": TURKISH + " TÜM HAKLARI\nsaklıdır!"}]
    assert failed_chat_rule(turns, rules) == "boilerplate"  # chats match the same folded form


def test_the_compiled_marker_search_finds_what_substring_search_finds():
    """pipeline.quality.has_boilerplate (one compiled pass, candidates by their first two bytes) against `in`, on
    random keys and markers: markers at the very start and end, sharing prefixes, starting with 2-byte letters."""
    import random

    from pipeline.quality import has_boilerplate

    rng = random.Random(0)
    pieces = ["ç", "çe", "çer", "ez", "en", "abc", "ab", " ", "ı", "ş", "z"]
    for _ in range(3000):
        key = "".join(rng.choices(pieces, k=rng.randint(0, 12))).encode("utf-8")
        markers = ["".join(rng.choices(pieces, k=rng.randint(1, 3))) for _ in range(rng.randint(0, 4))]
        markers = [marker for marker in markers if len(marker.encode("utf-8")) >= 2]
        assert has_boilerplate(key, markers) == any(marker.encode("utf-8") in key for marker in markers), (key, markers)


def test_default_markers_drop_notices_not_topics(params):
    article = ("JavaScript, web sayfalarını etkileşimli hale getiren bir programlama dilidir. Tarayıcıda çalışır ve "
               "cookie adı verilen küçük dosyalarla kullanıcı tercihlerini saklayabilir.")
    assert failed_rule(article, params.filter) is None
    assert failed_rule(TURKISH + " Bu içeriği görmek için lütfen JavaScript'i etkinleştirin.", params.filter) == (
        "boilerplate")
    assert failed_rule(TURKISH + " This site uses cookies.", params.filter) == "boilerplate"


def test_a_marker_that_folds_to_a_fragment_is_refused(params):
    from pydantic import ValidationError

    from pipeline.params import Filter

    with pytest.raises(ValidationError, match=r"too short: \['\(c\)'\]"):
        Filter.model_validate({**params.filter.model_dump(), "boilerplate_markers": ["(c)", "lorem ipsum"]})
