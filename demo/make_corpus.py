"""Write the embedded demo corpus: small Turkish sources in the three real Hub formats, with contaminants,
and real Turkish prose that nobody on the project wrote.

Every sentence of the templates below was written for this project. The output is committed under demo/data/;
tests/test_demo_corpus.py checks that this script still reproduces it byte for byte.

- web.jsonl         OSCAR 2019 style rows ({"id", "text"}): Turkish web prose, plus English, Azerbaijani,
                    exact and near duplicates, boilerplate and very short rows.
- wikipedia.parquet wikimedia/wikipedia rows (id, url, title, text): Turkish articles about cities.
- chats.json        OpenHermes-2.5 rows (conversations [{from, value, weight}], source, ...): Turkish chats,
                    English chats and a Turkish question with an English answer.
- tr_regions.jsonl  multiple-choice questions (which region is each city in?) for the local lm-eval task
                    configs/eval/tasks/demo_tr_regions.yaml.
- help.jsonl        real prose: pages of LibreOffice's Turkish help (MPL-2.0; origin in demo/data/SOURCES.md), one
                    page a row ({"id", "url", "text"}), so that the demo does not learn only its own templates.
                    It is an extract of a Debian package, not generated: `--extract-help DIR` rewrites it from the
                    unpacked package; the plain run leaves it as committed.

Run: python demo/make_corpus.py
     python demo/make_corpus.py --extract-help <unpacked libreoffice-help-tr>/usr/share/libreoffice/help/tr/text
"""
from __future__ import annotations

import argparse
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "data"

# name, genitive, locative, region, neighbour, known for, river or sea, population in thousands (rounded, illustrative)
CITIES = [
    ("Ankara", "Ankara'nın", "Ankara'da", "İç Anadolu", "Kırıkkale", "Anıtkabir ve geniş bulvarları", "Ankara Çayı", 5700),
    ("İzmir", "İzmir'in", "İzmir'de", "Ege", "Manisa", "Kordon boyu ve saat kulesi", "Ege Denizi", 4400),
    ("Bursa", "Bursa'nın", "Bursa'da", "Marmara", "Balıkesir", "Uludağ ve ipek çarşısı", "Nilüfer Çayı", 3200),
    ("Trabzon", "Trabzon'un", "Trabzon'da", "Karadeniz", "Rize", "Sümela Manastırı ve Uzungöl", "Karadeniz", 820),
    ("Konya", "Konya'nın", "Konya'da", "İç Anadolu", "Aksaray", "Mevlana Müzesi ve etli ekmek", "Çarşamba Çayı", 2300),
    ("Antalya", "Antalya'nın", "Antalya'da", "Akdeniz", "Isparta", "Kaleiçi ve uzun kumsalları", "Akdeniz", 2700),
    ("Erzurum", "Erzurum'un", "Erzurum'da", "Doğu Anadolu", "Erzincan", "Palandöken ve cağ kebabı", "Karasu", 750),
    ("Gaziantep", "Gaziantep'in", "Gaziantep'te", "Güneydoğu Anadolu", "Kilis", "baklavası ve bakırcılar çarşısı", "Alleben Deresi", 2100),
    ("Eskişehir", "Eskişehir'in", "Eskişehir'de", "İç Anadolu", "Kütahya", "Porsuk Çayı üzerindeki gondolları", "Porsuk Çayı", 900),
    ("Samsun", "Samsun'un", "Samsun'da", "Karadeniz", "Ordu", "Bandırma Vapuru ve geniş sahili", "Yeşilırmak", 1400),
    ("Kayseri", "Kayseri'nin", "Kayseri'de", "İç Anadolu", "Nevşehir", "Erciyes Dağı ve pastırması", "Kızılırmak", 1450),
    ("Mardin", "Mardin'in", "Mardin'de", "Güneydoğu Anadolu", "Batman", "taş evleri ve dar sokakları", "Dicle", 870),
    ("Edirne", "Edirne'nin", "Edirne'de", "Marmara", "Kırklareli", "Selimiye Camii ve tava ciğeri", "Meriç", 415),
    ("Van", "Van'ın", "Van'da", "Doğu Anadolu", "Bitlis", "Van Gölü ve kahvaltısı", "Van Gölü", 1130),
    ("Çanakkale", "Çanakkale'nin", "Çanakkale'de", "Marmara", "Balıkesir", "boğazı ve Truva antik kenti", "Çanakkale Boğazı", 560),
    ("Hatay", "Hatay'ın", "Hatay'da", "Akdeniz", "Osmaniye", "künefesi ve zengin mutfağı", "Asi Nehri", 1680),
]

ARTICLE_TEMPLATES = [
    "{name}, Türkiye'nin {region} Bölgesi'nde yer alan bir ildir. {gen} nüfusu yaklaşık {pop} bin kişidir.\n\n"
    "Şehir, {known} ile tanınır. Komşu illerinden biri {neighbour} ilidir.\n\n"
    "{loc} ekonomi büyük ölçüde ticarete, tarıma ve hizmet sektörüne dayanır. Şehrin yakınından {water} geçer.",
    "{name}, {region} Bölgesi'nin önemli şehirlerinden biridir. Şehirde yaklaşık {pop} bin kişi yaşar.\n\n"
    "Tarih boyunca pek çok medeniyete ev sahipliği yapan {name}, bugün {known} ile bilinir.\n\n"
    "{loc} kışlar bölgenin iklimine göre değişir; yazlar ise genellikle sıcak ve kurak geçer.",
    "{name} ili, {region} Bölgesi'nde bulunur ve {neighbour} ile komşudur.\n\n"
    "{gen} en çok ziyaret edilen yerleri arasında {known} sayılabilir. Her yıl binlerce turist şehri görmeye gelir.\n\n"
    "Şehirde üniversiteler, müzeler ve tarihi çarşılar bulunur. {water} şehrin yaşamında önemli bir yer tutar.",
]

# Web posts are built from sentence pools, so that posts on the same theme are not near duplicates.
WEB_POOLS = {
    "travel": [
        ["Geçen hafta sonu {loc} bulunduk.", "Bu yaz ailece {loc} birkaç gün geçirdik.",
         "Uzun zamandır görmek istediğim {name} şehrine nihayet gidebildim.", "Arkadaşlarla {loc} kısa bir tatil yaptık."],
        ["Sabah erkenden yola çıktık ve öğleden önce şehre vardık.", "Otobüs yolculuğu beklediğimizden kısa sürdü.",
         "Trenle gitmeyi seçtik; manzara yol boyunca çok güzeldi.", "Uçağımız rötar yaptı ama akşam olmadan otele yerleştik."],
        ["İlk durağımız {known} oldu.", "Herkes bize {known} görmemizi önermişti, haklıydılar.",
         "Şehrin en çok konuşulan yerleri {known}; ikisini de gezdik.", "Rehberimiz bize önce {known} hakkında bilgi verdi."],
        ["Akşam yemeğinde yöresel lezzetleri denedik ve çok beğendik.", "Yemekler biraz baharatlıydı ama çok lezzetliydi.",
         "Küçük bir lokantada yediğimiz ev yemeklerini unutamayacağız.", "Çarşıdan aldığımız tatlıları eve kadar zor getirdik."],
        ["Bir dahaki sefere daha uzun kalmayı planlıyoruz.", "Kesinlikle tekrar gitmek istiyoruz.",
         "Yolu düşen herkese tavsiye ederim.", "Fotoğrafları yakında paylaşacağım."],
    ],
    "weather": [
        ["{loc} bu hafta hava parçalı bulutlu olacak.", "Meteoroloji, {loc} önümüzdeki günlerde serin bir hava bekliyor.",
         "{gen} hava durumu raporuna göre hafta başı güneşli geçecek.", "{loc} dün akşam başlayan rüzgar bugün de sürüyor."],
        ["Uzmanlar hafta ortasında sağanak yağış bekliyor.", "Salı gününden itibaren yağmur ihtimali artıyor.",
         "Gece saatlerinde sıcaklık sıfırın altına düşebilir.", "Öğle saatlerinde kısa süreli gök gürültülü sağanak görülebilir."],
        ["Sürücülerin dikkatli olması öneriliyor.", "Yola çıkmadan önce güncel tahminleri kontrol etmekte fayda var.",
         "Belediye ekipleri olası su baskınlarına karşı hazırlık yapıyor.", "Çiftçilerin ürünlerini korumaları için uyarı yapıldı."],
        ["Hafta sonu ise sıcaklıkların mevsim normallerine dönmesi bekleniyor.", "Pazar günü hava yeniden açacak.",
         "Hafta sonu piknik yapmak isteyenler için hava uygun görünüyor.", "Cumartesi sabahı sis bekleniyor."],
    ],
    "city": [
        ["{gen} merkezinde yeni bir kütüphane açıldı.", "{loc} yeni bir park halkın kullanımına sunuldu.",
         "{gen} tarihi çarşısı restorasyonun ardından yeniden açıldı.", "{loc} bisiklet yolları genişletiliyor."],
        ["Belediye, projenin iki yılda tamamlandığını açıkladı.", "Açılış törenine çok sayıda vatandaş katıldı.",
         "Çalışmalar sırasında bazı sokaklar trafiğe kapatılmıştı.", "Projenin maliyeti belediye bütçesinden karşılandı."],
        ["Çocuklar için oyun alanları ve okuma köşeleri de bulunuyor.", "Yaşlılar için dinlenme alanları yapıldı.",
         "Alanın her gün akşam dokuza kadar açık olacağı duyuruldu.", "Girişler ücretsiz olacak."],
        ["Mahalle sakinleri yeniliklerden memnun olduklarını söyledi.", "Esnaf, ziyaretçi sayısının artmasını bekliyor.",
         "Yetkililer benzer projelerin diğer ilçelerde de yapılacağını belirtti.",
         "Öğrenciler özellikle sessiz çalışma alanlarını beğendi."],
    ],
}
RECIPES = [
    ("mercimek çorbası", "kırmızı mercimek, soğan, havuç ve bir kaşık un", "kırk dakika"),
    ("karnıyarık", "patlıcan, kıyma, domates ve sivri biber", "bir saat"),
    ("menemen", "yumurta, domates, biber ve biraz tereyağı", "on beş dakika"),
    ("sütlaç", "süt, pirinç, şeker ve nişasta", "bir buçuk saat"),
    ("imam bayıldı", "patlıcan, bol soğan, sarımsak ve zeytinyağı", "bir saat"),
    ("kısır", "ince bulgur, domates salçası, maydanoz ve nar ekşisi", "yarım saat"),
]

RECIPE_TEMPLATE = (
    "Bugün size {dish} tarifini anlatacağım. Malzemeler: {ingredients}. Hazırlaması yaklaşık {time} sürüyor. "
    "Önce malzemeleri hazırlayın ve tencereyi orta ateşte ısıtın. Ardından malzemeleri sırayla ekleyip karıştırın. "
    "Pişince servis tabağına alın ve sıcak ya da ılık olarak sunun. Afiyet olsun!"
)

ENGLISH = [
    "The city council approved a new budget for public transport this week. Officials said the money will "
    "be used to buy electric buses and to extend the tram line to the northern suburbs.",
    "Our team spent the weekend hiking in the mountains. The weather was cold but clear, and we reached the "
    "summit just before noon. We will definitely come back next summer.",
    "To bake good bread at home, use strong flour, a little salt and plenty of patience. Let the dough rise "
    "slowly in a cool place, then bake it in a very hot oven.",
]

AZERBAIJANI = [
    "Bakı Azərbaycanın paytaxtı və ən böyük şəhəridir. Şəhər Xəzər dənizinin sahilində yerləşir və qədim "
    "İçərişəhər hissəsi ilə məşhurdur. Hər il minlərlə turist şəhərə gəlir.",
    "Gəncə Azərbaycanın ikinci böyük şəhəridir. Şəhərdə çoxlu park, muzey və tarixi abidə var. Yerli "
    "əhali qonaqpərvərliyi ilə tanınır.",
    "Bu həftə sonu hava yağışlı olacaq. Sürücülərə yolda diqqətli olmaları tövsiyə edilir. Həftənin ortasında "
    "temperaturun bir qədər artması gözlənilir.",
]

BOILERPLATE = [
    "Bu web sitesi deneyiminizi geliştirmek için çerezleri kullanır. Çerezleri kabul ediyor musunuz? Kabul et "
    "Reddet Ayarlar. Daha fazla bilgi için çerez politikamızı okuyun. Tüm hakları saklıdır.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris.",
    "Ana Sayfa\nHakkımızda\nİletişim\nAna Sayfa\nHakkımızda\nİletişim\nAna Sayfa\nHakkımızda\nİletişim\n"
    "Giriş Yap\nÜye Ol\nGiriş Yap\nÜye Ol",
]

SHORT = ["Merhaba!", "Devamını oku", "Tıklayınız", "Sayfa 2"]

QUESTIONS = [
    ("{gen} nüfusu ne kadardır?", "{gen} nüfusu yaklaşık {pop} bin kişidir."),
    ("{name} hangi bölgededir?", "{name}, Türkiye'nin {region} Bölgesi'nde yer alır."),
    ("{name} ile ne meşhurdur?", "{name} en çok {known} ile tanınır."),
    ("{gen} komşu illerinden birini söyler misin?", "Elbette. {neighbour}, {gen} komşu illerinden biridir."),
]


def city_fields(city: tuple) -> dict:
    name, gen, loc, region, neighbour, known, water, pop = city
    return {"name": name, "gen": gen, "loc": loc, "region": region, "neighbour": neighbour, "known": known,
            "water": water, "pop": pop}


def web_rows(rng: random.Random) -> list[dict]:
    texts = [
        " ".join(rng.choice(options) for options in pool).format(**city_fields(city))
        for city in CITIES
        for pool in WEB_POOLS.values()
    ]
    texts += [RECIPE_TEMPLATE.format(dish=d, ingredients=i, time=t) for d, i, t in RECIPES]
    rng.shuffle(texts)
    contaminants = ENGLISH + AZERBAIJANI + BOILERPLATE + SHORT
    contaminants += texts[:3]  # exact duplicates
    contaminants += [texts[3].replace("Sabah erkenden", "Sabah çok erkenden"), texts[4] + " Teşekkürler."]  # near
    rows = texts + contaminants
    rng.shuffle(rows)
    return [{"id": i, "text": text} for i, text in enumerate(rows)]


def wikipedia_rows() -> list[dict]:
    rows = []
    for i, city in enumerate(CITIES):
        fields = city_fields(city)
        text = ARTICLE_TEMPLATES[i % len(ARTICLE_TEMPLATES)].format(**fields)
        title = fields["name"]
        rows.append({"id": str(1000 + i), "url": f"https://tr.wikipedia.org/wiki/{title}", "title": title, "text": text})
    rows.append({"id": "2000", "url": "https://tr.wikipedia.org/wiki/Bak%C4%B1", "title": "Bakı", "text": AZERBAIJANI[0]})
    return rows


def turn(role: str, value: str) -> dict:
    return {"from": role, "value": value, "weight": None}


def chat_rows() -> list[dict]:
    conversations = []
    for i, city in enumerate(CITIES):
        fields = city_fields(city)
        q1, a1 = QUESTIONS[i % len(QUESTIONS)]
        q2, a2 = QUESTIONS[(i + 1) % len(QUESTIONS)]
        turns = [turn("human", q1.format(**fields)), turn("gpt", a1.format(**fields)),
                 turn("human", q2.format(**fields)), turn("gpt", a2.format(**fields))]
        if i % 3 == 0:
            turns.insert(0, turn("system", "Sen Türkçe konuşan yardımsever bir asistansın. Kısa ve doğru cevap ver."))
        conversations.append(turns)
    for dish, ingredients, time in RECIPES:
        conversations.append([turn("human", f"{dish.capitalize()} nasıl yapılır?"),
                              turn("gpt", RECIPE_TEMPLATE.format(dish=dish, ingredients=ingredients, time=time))])
    conversations.append([turn("human", "What is the capital of France?"),
                          turn("gpt", "The capital of France is Paris, which is also its largest city.")])
    conversations.append([turn("human", "Write a haiku about the sea."),
                          turn("gpt", "Grey waves fold and break,\nsalt wind carries gull voices,\nthe tide keeps its time.")])
    conversations.append([turn("human", "Ankara'nın nüfusu ne kadardır?"),
                          turn("gpt", "The population of Ankara is about five million seven hundred thousand people.")])
    return [
        {"conversations": c, "source": "demo", "category": None, "topic": None, "title": None, "model": None,
         "language": None, "id": None, "idx": None, "avatarUrl": None, "custom_instruction": None,
         "hash": None, "model_name": None, "skip_prompt_formatting": None, "system_prompt": None, "views": None}
        for c in conversations
    ]


REGIONS = ["Marmara", "Ege", "Akdeniz", "İç Anadolu", "Karadeniz", "Doğu Anadolu", "Güneydoğu Anadolu"]


def region_questions() -> list[dict]:
    rows = []
    for i, city in enumerate(CITIES):
        fields = city_fields(city)
        wrong = [r for r in REGIONS if r != fields["region"]]
        choices = [fields["region"], wrong[i % len(wrong)], wrong[(i + 3) % len(wrong)]]
        choices = choices[i % 3 :] + choices[: i % 3]  # the right answer in every position
        rows.append({"question": f"{fields['name']} hangi bölgede yer alır?", "choices": choices,
                     "answer": choices.index(fields["region"])})
    return rows


# Help pages kept: their Turkish paragraphs make 60 to 200 words (a paragraph of the demo's other prose, not a
# one-line stub or a long reference table); at most HELP_PER_MODULE from each module (Calc, Writer, Basic...),
# so that no one application's vocabulary dominates.
HELP_WORDS = (60, 200)
HELP_PAGES = 60
HELP_PER_MODULE = 12
HELP_URL = "https://help.libreoffice.org/7.4/tr/text/{page}"


class HelpPage(HTMLParser):
    """The title and the body paragraphs (`<p class="paragraph">`) of one LibreOffice help page; tables, notes
    and the navigation are left out."""

    def __init__(self) -> None:
        super().__init__()
        self.title, self.paragraphs = "", []
        self._in_title, self._paragraph = False, None

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag == "p" and dict(attrs).get("class") == "paragraph":
            self._paragraph = []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "p" and self._paragraph is not None:
            self.paragraphs.append(re.sub(r"\s+", " ", "".join(self._paragraph)).strip())
            self._paragraph = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._paragraph is not None:
            self._paragraph.append(data)


def help_rows(root: Path) -> list[dict]:
    """Pages of LibreOffice's Turkish help as text rows: each page's Turkish paragraphs under its title. The
    Turkish translation is incomplete, and untranslated paragraphs stay in English, so each paragraph is kept
    only if lingua (the filter's detector) calls it Turkish."""
    from lingua import Language, LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_languages(Language.TURKISH, Language.ENGLISH, Language.GERMAN).build()
    pages = []
    for path in sorted(root.rglob("*.html")):
        parsed = HelpPage()
        parsed.feed(path.read_text(encoding="utf-8"))
        paragraphs = [p for p in parsed.paragraphs
                      if len(p.split()) >= 6 and detector.detect_language_of(p) == Language.TURKISH]
        words = sum(len(p.split()) for p in paragraphs)
        if HELP_WORDS[0] <= words <= HELP_WORDS[1]:
            page = path.relative_to(root).as_posix()
            pages.append({"id": page.removesuffix(".html"), "url": HELP_URL.format(page=page),
                          "text": "\n".join([parsed.title.strip(), *paragraphs])})
    random.Random(11).shuffle(pages)
    chosen, per_module = [], {}
    for page in pages:
        module = page["id"].split("/")[0]
        if per_module.get(module, 0) < HELP_PER_MODULE and len(chosen) < HELP_PAGES:
            per_module[module] = per_module.get(module, 0) + 1
            chosen.append(page)
    return sorted(chosen, key=lambda row: row["id"])


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract-help", type=Path, metavar="DIR",
                        help="rewrite help.jsonl from an unpacked libreoffice-help-tr (its help/tr/text folder)")
    args = parser.parse_args()
    if args.extract_help:
        if not args.extract_help.is_dir():
            parser.error(f"--extract-help: no such folder {args.extract_help}")
        write_jsonl(OUT / "help.jsonl", help_rows(args.extract_help))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    with (OUT / "web.jsonl").open("w", encoding="utf-8") as handle:
        for row in web_rows(rng):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("title", pa.string()), ("text", pa.string())])
    pq.write_table(pa.Table.from_pylist(wikipedia_rows(), schema=schema), OUT / "wikipedia.parquet")
    (OUT / "chats.json").write_text(json.dumps(chat_rows(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    questions = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in region_questions())
    (OUT / "tr_regions.jsonl").write_text(questions, encoding="utf-8")


if __name__ == "__main__":
    main()
