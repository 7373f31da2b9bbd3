"""How many characters must the language decision read? Turkish precision and recall of the decision
(pipeline.language: the letter rules, and the detector, lingua among the filter's candidate languages, for texts
too short for them) and of lingua alone, against the length of the text they read, on hard cases: Turkish
paragraphs and their close Azerbaijani translations (the same sentences in a sister language), plus Turkmen,
which lingua does not know and calls Turkish.

    python bench/language_sample.py

The sentences are written for this benchmark; documents are 3-6 of them in random order, and each length is taken
as the detector takes its sample (pipeline.language.sample, from the middle). Writes
bench/results/language_sample.json: per length, for the decision and for lingua alone, mistakes at the threshold
and the closest call of lingua (lowest Turkish confidence on Turkish, highest on the others), and microseconds
per Turkish document on one core. Real text in 121 languages: bench/language_benchmark.py.
"""
from __future__ import annotations

import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.record import save  # noqa: E402

TURKISH = [
    "Bugün hava çok güzel, çocuklar parkta oynuyor ve annelerle babalar bankta oturup sohbet ediyor.",
    "Şehrin merkezinde yeni bir kütüphane açıldı. Kütüphanede binlerce kitap ve geniş bir okuma salonu var.",
    "Öğrenciler sınavlara hazırlanmak için her gün saatlerce çalışıyor ve öğretmenlerinden yardım alıyorlar.",
    "Dün akşam televizyonda futbol maçını izledik; bizim takım son dakikada gol atarak kazandı.",
    "Hükümet yeni ekonomik programı açıkladı. Programa göre vergiler azalacak ve yatırımlar artacak.",
    "Köyümüzde herkes birbirini tanır. Yazın bahçelerde domates, biber ve salatalık yetiştiririz.",
    "Bu kitabı okumanızı tavsiye ederim, çünkü yazar insan ilişkilerini çok güzel anlatıyor.",
    "Sabahları erken kalkıp koşuya çıkıyorum, sonra duş alıp kahvaltı yapıyorum ve işe gidiyorum.",
    "Dağların arasında küçük bir göl var. Yaz aylarında turistler buraya yüzmeye ve balık tutmaya gelir.",
    "Doktor hastaya ilaçlarını düzenli içmesini ve bir hafta boyunca evde dinlenmesini söyledi.",
    "Annem bize akşam yemeği için pilav, kuru fasulye ve tatlı olarak baklava hazırladı.",
    "Yarın sabah saat dokuzda toplantı var; lütfen raporları önceden hazırlayın.",
    "Dün akşam arkadaşlarımla birlikte sahilde uzun bir yürüyüş yaptık.",
    "Hava serindi ama deniz çok sakindi.",
    "Dönüşte küçük bir lokantada balık yedik ve gece geç saatte eve döndük.",
    "Kardeşim üniversiteyi bitirdikten sonra bir yazılım şirketinde çalışmaya başladı.",
    "Bu bölgede kışlar uzun ve soğuk geçer, yollar bazen günlerce kapalı kalır.",
    "Maç bitince taraftarlar sokaklara dökülüp sabaha kadar kutlama yaptı.",
]
AZERBAIJANI = [  # the Turkish sentences above, in the same order, translated closely
    "Bu gün hava çox gözəldir, uşaqlar parkda oynayır, analar və atalar skamyada oturub söhbət edirlər.",
    "Şəhərin mərkəzində yeni bir kitabxana açıldı. Kitabxanada minlərlə kitab və geniş oxu zalı var.",
    "Tələbələr imtahanlara hazırlaşmaq üçün hər gün saatlarla çalışır və müəllimlərindən kömək alırlar.",
    "Dünən axşam televizorda futbol oyununa baxdıq; bizim komanda son dəqiqədə qol vuraraq qalib gəldi.",
    "Hökumət yeni iqtisadi proqramı açıqladı. Proqrama görə vergilər azalacaq və investisiyalar artacaq.",
    "Kəndimizdə hamı bir-birini tanıyır. Yayda bağlarda pomidor, bibər və xiyar yetişdiririk.",
    "Bu kitabı oxumağınızı tövsiyə edirəm, çünki müəllif insan münasibətlərini çox gözəl təsvir edir.",
    "Səhərlər tez durub qaçışa çıxıram, sonra duş qəbul edib səhər yeməyi yeyirəm və işə gedirəm.",
    "Dağların arasında kiçik bir göl var. Yay aylarında turistlər bura üzməyə və balıq tutmağa gəlirlər.",
    "Həkim xəstəyə dərmanlarını müntəzəm içməyi və bir həftə ərzində evdə dincəlməyi söylədi.",
    "Anam bizə axşam yeməyi üçün plov, lobya və şirniyyat olaraq paxlava hazırladı.",
    "Sabah səhər saat doqquzda iclas var; xahiş edirəm hesabatları əvvəlcədən hazırlayın.",
    "Dünən axşam dostlarımla birlikdə sahildə uzun bir gəzinti etdik.",
    "Hava sərin idi, amma dəniz çox sakit idi.",
    "Qayıdarkən kiçik bir restoranda balıq yedik və gecə gec saatda evə qayıtdıq.",
    "Qardaşım universiteti bitirdikdən sonra bir proqram şirkətində işləməyə başladı.",
    "Bu bölgədə qışlar uzun və soyuq keçir, yollar bəzən günlərlə bağlı qalır.",
    "Oyun bitəndə azarkeşlər küçələrə töküldü və səhərə qədər bayram etdilər.",
]
TURKMEN = [
    "Aşgabat Türkmenistanyň paýtagty we iň uly şäheridir.",
    "Düýn agşam dostlarym bilen deňiz kenarynda uzak gezelenç etdik.",
    "Howa salkyndy, emma deňiz örän asuda boldy.",
    "Gaýdyp gelýärkäk kiçijik bir restoranda balyk iýdik we gijä galyp öýe geldik.",
    "Bu kitaby okamagyňyzy maslahat berýärin, sebäbi ýazyjy adam gatnaşyklaryny gowy beýan edýär.",
    "Hökümet täze ykdysady maksatnamany yglan etdi.",
    "Mekdepde okuwçylar täze kitaplary okaýarlar we mugallymlaryndan kömek alýarlar.",
    "Ertir irden oba gideris, sebäbi enemiň doglan güni.",
    "Daglaryň arasynda kiçi bir köl bar, tomusda syýahatçylar bu ýere suwa düşmäge gelýärler.",
    "Lukman näsaga dermanlaryny yzygiderli içmegi we bir hepde öýde dynç almagy maslahat berdi.",
]
LENGTHS = (60, 100, 160, 200, 300, 600)


def documents(pool: list[str], n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.sample(pool, rng.randint(3, 6))) for _ in range(n)]


def main() -> None:
    from lingua import Language

    from pipeline.language import TurkishDetector, sample
    from pipeline.params import load

    rules = load(ROOT / "params.yaml").filter
    rng = random.Random(0)
    docs = {"tr": documents(TURKISH, 2000, rng), "az": documents(AZERBAIJANI, 2000, rng),
            "tk": documents(TURKMEN, 1000, rng)}
    result = {"machine": f"{platform.machine()}, {platform.python_version()}, one process",
              "threshold": rules.min_turkish_confidence, "candidates": rules.candidate_languages,
              "documents": {label: len(texts) for label, texts in docs.items()}, "by_sample_chars": {}}
    detector = TurkishDetector(rules)
    threshold = rules.min_turkish_confidence
    for chars in LENGTHS:
        samples = {label: [sample(text, chars) for text in texts] for label, texts in docs.items()}
        kept = {label: [detector.decide([text]).turkish for text in texts] for label, texts in samples.items()}
        scores = {label: [detector._lingua.compute_language_confidence(text, Language.TURKISH) for text in texts]
                  for label, texts in samples.items()}
        called = {"decision": {"turkish_missed": kept["tr"].count(False),
                               "azerbaijani_called_turkish": kept["az"].count(True),
                               "turkmen_called_turkish": kept["tk"].count(True)},
                  "lingua_alone": {"turkish_missed": sum(s < threshold for s in scores["tr"]),
                                   "azerbaijani_called_turkish": sum(s >= threshold for s in scores["az"]),
                                   "turkmen_called_turkish": sum(s >= threshold for s in scores["tk"]),
                                   "lowest_confidence_on_turkish": min(scores["tr"]),
                                   "highest_confidence_on_the_others": max(scores["az"] + scores["tk"])}}
        start = time.process_time()
        for text in samples["tr"]:  # the common case
            detector.decide([text])
        called["microseconds_per_turkish_document"] = round((time.process_time() - start) / len(docs["tr"]) * 1e6,
                                                            1)
        result["by_sample_chars"][chars] = called
        print(chars, result["by_sample_chars"][chars])
    save("language_sample", result)


if __name__ == "__main__":
    main()
