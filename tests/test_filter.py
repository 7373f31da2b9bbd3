"""Language ID, quality rules, dedup and the filter stage's split, on texts written for these tests."""
import pytest

from pipeline.decontaminate import Contamination
from pipeline.dedup import Deduplicator
from pipeline.language import TurkishDetector
from pipeline.quality import failed_rule
from pipeline.text import dedup_key, normalise, turkish_casefold
from stages.filter import filter_batch, is_validation

TURKISH = ("Dün akşam arkadaşlarımla birlikte sahilde uzun bir yürüyüş yaptık. Hava serindi ama deniz çok "
           "sakindi. Dönüşte küçük bir lokantada balık yedik ve gece geç saatte eve döndük.")
TURKISH_MORE = ("Sabah erkenden kalkıp kahvaltı hazırladık. Annem taze ekmek almak için fırına gitti, babam da "
                "çayı demledi. Kahvaltıdan sonra hep birlikte bahçedeki ağaçları suladık ve öğleye kadar kitap okuduk.")
AZERBAIJANI = ("Dünən axşam dostlarımla birlikdə sahildə uzun bir gəzinti etdik. Hava sərin idi, amma dəniz çox "
               "sakit idi. Qayıdarkən kiçik bir restoranda balıq yedik və gecə gec saatda evə qayıtdıq.")
ENGLISH = ("Last night my friends and I took a long walk along the beach. The air was cool but the sea was very "
           "calm. On the way back we ate fish at a small restaurant and got home late.")


@pytest.fixture(scope="module")
def lingua(params=None):
    from pipeline.params import load
    from tests.tiny import REPO

    rules = load(REPO / "params.yaml").filter
    return TurkishDetector("lingua", rules.candidate_languages, rules.min_turkish_confidence)


def test_lingua_tells_turkish_from_azerbaijani_and_english(lingua):
    assert lingua.is_turkish([TURKISH, AZERBAIJANI, ENGLISH]) == [True, False, False]


def test_langdetect_is_selectable_and_seeded(params):
    detector = TurkishDetector("langdetect", params.filter.candidate_languages, 0.5)
    assert detector.confidences([ENGLISH]) == [0.0]
    assert detector.confidences([TURKISH]) == detector.confidences([TURKISH])
    assert detector.is_turkish([TURKISH]) == [True]


def test_unknown_candidate_language_names_the_param():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="filter.candidate_languages"):
        TurkishDetector("lingua", ["TURKISH", "KLINGON"], 0.5)


def test_turkish_case_folding_and_nfc():
    assert turkish_casefold("IĞDIR İZMİR") == "ığdır izmir"
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
    ("\n".join(["Ana sayfa bağlantısı burada duruyor", "Kampanyalı ürünler ve fırsatlar listesi",
                "Kadın giyim ayakkabı çanta modelleri", "Erkek saat kemer cüzdan çeşitleri",
                "Çocuk oyuncak kitap kırtasiye malzemeleri", "Ev dekorasyon mutfak banyo aksesuarları"]),
     "punctuated_lines"),
])
def test_each_quality_rule_drops_its_case(params, text, rule):
    assert failed_rule(text, params.filter) == rule


def test_clean_turkish_passes_every_rule(params):
    assert failed_rule(TURKISH, params.filter) is None


def test_exact_and_near_duplicates():
    dedup = Deduplicator(threshold=0.8, permutations=128)
    third = ("Akşamüstü komşularımız bize uğradı ve bahçede birlikte çay içtik. Çocuklar top oynarken biz de "
             "eski günlerden, okul yıllarından ve yaz tatillerinden konuştuk. Güneş batınca herkes evine döndü.")
    long_turkish = " ".join([TURKISH, TURKISH_MORE, third])  # ~90 words: one changed word keeps Jaccard ~0.9
    assert dedup.check(dedup_key(long_turkish)) is None
    turkish_upper = long_turkish.translate(str.maketrans({"i": "İ", "ı": "I"})).upper()
    assert dedup.check(dedup_key(turkish_upper)) == "exact_duplicate"
    assert dedup.check(dedup_key(long_turkish.replace("balık", "köfte"))) == "near_duplicate"
    assert dedup.check(dedup_key(TURKISH_MORE)) is None  # half of a document is not its duplicate
    assert dedup.check(dedup_key(AZERBAIJANI)) is None


def chat(question, answer):
    return {"id": question, "source": "c", "kind": "chat", "text": None, "meta": None,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_a_chat_needs_every_user_and_assistant_turn_in_turkish(params, lingua):
    from collections import Counter

    counts = Counter()
    rows = [chat(TURKISH, TURKISH.replace("sahilde", "parkta")), chat(TURKISH.replace("balık", "pilav"), ENGLISH)]
    kept = list(filter_batch(rows, params, lingua, Deduplicator(0.8, 128), Contamination(13), counts))
    assert [row["id"] for _, row in kept] == [rows[0]["id"]]  # English system prompt is not judged
    assert counts == {"language": 1}


def test_validation_split_is_a_stable_function_of_source_and_id():
    rows = [{"source": "web", "id": str(i)} for i in range(2000)]
    chosen = [is_validation(row, 0.1) for row in rows]
    assert chosen == [is_validation(row, 0.1) for row in rows]
    assert 150 < sum(chosen) < 250
