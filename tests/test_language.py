"""The language decision: on the real multilingual benchmark (bench/langid), on Turkic neighbours, on Turkish that
quotes foreign names and sentences, on chats, and the labels of what it rejects."""
import gzip
import json

import pytest

from pipeline.errors import PipelineError
from pipeline.language import TurkishDetector, Verdict
from tests.tiny import REPO

TURKISH = ("Dün akşam arkadaşlarımla birlikte sahilde uzun bir yürüyüş yaptık. Hava serindi ama deniz çok "
           "sakindi. Dönüşte küçük bir lokantada balık yedik ve gece geç saatte eve döndük.")
NEIGHBOURS = {
    "az": ("Dünən axşam dostlarımla birlikdə sahildə uzun bir gəzinti etdik. Hava sərin idi, amma dəniz çox "
           "sakit idi. Qayıdarkən kiçik bir restoranda balıq yedik və gecə gec saatda evə qayıtdıq."),
    "tk": ("Düýn agşam dostlarym bilen deňiz kenarynda uzak gezelenç etdik. Howa salkyndy, emma deňiz örän asuda "
           "boldy. Gaýdyp gelýärkäk kiçijik bir restoranda balyk iýdik we gijä galyp öýe geldik."),
    "crh": ("Keçe aqşam dostlarım ile deñiz boyunda uzun bir gezinti yaptıq. Hava serin edi, amma deñiz pek "
            "sakin edi. Qaytqanda kiçik bir aşhanede balıq aşadıq ve gece keç evge qayttıq."),
    "uz": ("Kecha kechqurun doʻstlarim bilan dengiz boʻyida uzoq sayr qildik. Havo salqin edi, lekin dengiz juda "
           "tinch edi. Qaytishda kichik bir restoranda baliq yedik va kechasi kech uyga qaytdik."),
    "ku": ("Duh êvarê ez û hevalên xwe li ber deryayê geriyan. Hewa sar bû, lê derya pir aram bû. Di vegerê de "
           "me li xwaringeheke biçûk masî xwar û şevê dereng vegeriyan malê."),
    "kk": "Кеше кешке достарыммен бірге теңіз жағасында ұзақ серуендедік. Ауа салқын болды, бірақ теңіз тыныш еді.",
    "ky": "Кечээ кечинде досторум менен деңиз жээгинде узак сейилдедик. Аба салкын болчу, бирок деңиз тынч эле.",
    "tt": "Кичә кич белән дусларым белән диңгез буенда озак йөрдек. Һава салкын иде, ләкин диңгез тыныч иде.",
    "ug": "تۈنۈگۈن كەچتە دوستلىرىم بىلەن دېڭىز بويىدا ئۇزۇن سەيلە قىلدۇق. ھاۋا سالقىن ئىدى، لېكىن دېڭىز تىنچ ئىدى.",
}
ENGLISH = ("Last night my friends and I took a long walk along the beach. The air was cool but the sea was very "
           "calm. On the way back we ate fish at a small restaurant and got home late.")
POLISH = ("Wczoraj wieczorem poszliśmy z przyjaciółmi na długi spacer wzdłuż plaży. Powietrze było chłodne, ale "
          "morze było bardzo spokojne. W drodze powrotnej zjedliśmy rybę w małej restauracji.")


def rules(**changes):
    from pipeline.params import load

    return load(REPO / "params.yaml").filter.model_copy(update=changes)


@pytest.fixture(scope="module")
def detector():
    return TurkishDetector(rules())


def test_on_real_text_in_121_languages_turkish_precision_and_recall_meet_the_targets(detector):
    """bench/langid: translator-written text (gettext catalogs, LibreOffice's and GNOME's help pages), mixed
    documents and chats; bench/language_benchmark.py reports the same per language."""
    with gzip.open(REPO / "bench/langid/benchmark.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    assert len({doc["lang"] for doc in docs}) >= 40 and {"Latn", "Cyrl", "Arab"} <= {doc["script"] for doc in docs}
    kept = [detector.decide(doc["texts"]).turkish for doc in docs]
    turkish = sum(k and doc["turkish"] for k, doc in zip(kept, docs))
    precision, recall = turkish / sum(kept), turkish / sum(doc["turkish"] for doc in docs)
    assert precision >= 0.99 and recall >= 0.95
    for lang in ("az", "tk", "uz", "ku", "kk", "ky", "tt", "ug", "pl", "lv", "bs", "ms", "id"):
        assert not any(k for k, doc in zip(kept, docs) if doc["lang"] == lang), lang


@pytest.mark.parametrize("lang", sorted(NEIGHBOURS))
def test_turkic_neighbours_and_kurmanji_are_not_turkish(detector, lang):
    assert detector.decide([NEIGHBOURS[lang]]).turkish is False
    assert detector.decide([TURKISH]) == Verdict(True, "tr")


def test_turkish_quoting_foreign_names_or_an_english_sentence_stays_turkish(detector):
    """A quoted name carries letters Turkish does not write; a name or an English sentence must not sink a text."""
    questions = ["Kärcher süpürgemin filtresini nasıl temizlerim?", "Edin Džeko bu sezon kaç gol attı?",
                 "İspanyolca'da España kelimesi nasıl okunur?", "Łódź şehrine en kolay nasıl gidilir?"]
    paragraph = ("Evimizi temizlemek için geçen hafta bir Kärcher aldık ve çok memnun kaldık. Kärcher makinesi "
                 "halıları, koltukları ve balkon zeminini kolayca temizliyor; annem de çok beğendi. Geçen yaz "
                 "Łódź'a ve oradan España'ya gittik, Džeko'nun maçını da stadyumda izledik.")
    quoting = (TURKISH + " Rehberimiz bize şehrin sloganını şöyle söyledi: \"The city that never sleeps welcomes "
               "you.\" Sonra otele dönüp dinlendik ve ertesi gün erkenden müzeleri gezmeye çıktık. Müzelerin "
               "çoğu ücretsizdi ve görevliler çok yardımseverdi.")
    assert [detector.decide([text]).turkish for text in [*questions, paragraph, quoting]] == [True] * 6


def test_a_chat_is_turkish_only_when_every_turn_is(detector):
    assert detector.decide(["Dün akşam ne yaptınız?", TURKISH]) == Verdict(True, "tr")
    assert detector.decide(["Dün akşam ne yaptınız?", ENGLISH]) == Verdict(False, "en")
    assert detector.decide([ENGLISH, TURKISH]).turkish is False
    short_turns = ["Biz düýn akşam gezdik.", "Kiçijik bir restoranda balyk iýdik.", "Sonra öýe geldik."]
    assert all(detector.decide([turn]).turkish for turn in short_turns)  # each alone has one Turkmen word
    assert detector.decide(short_turns) == Verdict(False, "foreign_words")  # together they tell


def test_a_rejection_names_the_language_the_script_or_the_rule(detector):
    assert detector.decide([ENGLISH]) == Verdict(False, "en")
    assert detector.decide([POLISH]) == Verdict(False, "pl")
    assert detector.decide([NEIGHBOURS["az"]]) == Verdict(False, "az")
    assert detector.decide(["Вчера вечером мы долго гуляли по пляжу с друзьями."]) == Verdict(False, "cyrillic")
    assert detector.decide([NEIGHBOURS["ug"]]) == Verdict(False, "arabic")
    assert detector.decide(["12345 67890 !!!"]) == Verdict(False, "unknown")
    # lingua has no Turkmen and calls it Turkish: the rule that rejected it is the label
    assert detector.decide([NEIGHBOURS["tk"]]) == Verdict(False, "foreign_words")
    ascii_turkish = ("Dun aksam arkadaslarimla birlikte sahilde uzun bir yuruyus yaptik. Hava serindi ama deniz cok "
                     "sakindi. Donuste kucuk bir lokantada balik yedik ve gece gec saatte eve donduk. Sabah erkenden "
                     "kalkip kahvalti hazirladik, annem taze ekmek almak icin firina gitti, babam da cayi demledi.")
    assert detector.decide([ascii_turkish]) == Verdict(False, "few_turkish_letters")  # Turkish without its letters


def test_langdetect_is_selectable_and_seeded():
    detector = TurkishDetector(rules(language_detector="langdetect"))
    assert detector.decide(["Dün akşam ne yaptınız?"]) == Verdict(True, "tr")
    assert detector.decide(["What did you do last night?"]) == detector.decide(["What did you do last night?"])
    assert detector.decide(["What did you do last night?"]).turkish is False
    assert detector.decide([ENGLISH]) == Verdict(False, "en")


def test_unknown_candidate_language_names_the_param():
    with pytest.raises(PipelineError, match="filter.candidate_languages"):
        TurkishDetector(rules(candidate_languages=["TURKISH", "KLINGON"]))
