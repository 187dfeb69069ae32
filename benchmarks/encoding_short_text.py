"""How short may legacy-encoded text be and still be decoded right (issue 16)? For one real
sentence per encoding, every prefix of it (1 character, 2, ...) is encoded and decoded by
lokal's text decoder; printed: the prefix lengths decoded wrong, and the longest of them.

Run: ``.venv/bin/python benchmarks/encoding_short_text.py``
"""

from __future__ import annotations

import charset_normalizer

from lokal.agent.parsers import Unsupported, decode

SENTENCES = {
    "cp1250": "Příliš žluťoučký kůň úpěl ďábelské ódy. Zażółć gęślą jaźń.",
    "cp1251": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "cp1252": "Le cœur déçu mais l'âme plutôt naïve, Louÿs rêva de crapaüter.",
    "latin-1": "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg.",
    "cp1253": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Η Αθήνα είναι η πρωτεύουσα.",
    "shift_jis": "いろはにほへと ちりぬるを わかよたれそ つねならむ。東京は日本の首都です。",
    "gb18030": "我能吞下玻璃而不伤身体。北京是中华人民共和国的首都。",
    "euc-kr": "다람쥐 헌 쳇바퀴에 타고파. 서울은 대한민국의 수도입니다.",
}


def main() -> None:
    print(f"charset-normalizer {charset_normalizer.__version__}")
    print("| encoding | sentence length | prefix lengths decoded wrong | longest wrong |")
    print("|---|---|---|---|")
    for encoding, text in SENTENCES.items():
        wrong = []
        for n in range(1, len(text) + 1):
            prefix = text[:n]
            try:
                right = decode(prefix.encode(encoding))[0] == prefix
            except Unsupported:  # an unreadable prefix is a wrong one
                right = False
            if not right:
                wrong.append(n)
        shown = ", ".join(map(str, wrong)) or "none"
        print(f"| {encoding} | {len(text)} | {shown} | {max(wrong) if wrong else '-'} |")


if __name__ == "__main__":
    main()
