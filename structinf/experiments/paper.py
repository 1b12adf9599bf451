"""The paper's reported numbers (Tu and Gimpel, 2019), set beside ours in every table.

Our tasks map to the paper's as: twitter-pos -> POS, conll2003 -> NER,
ewt-large -> CCG (a substitute: UD English-EWT ``XPOS|deprel|direction``
with 400 + ``*`` labels stands in for CCG supertagging, whose data is not
available here). Scores are percentages.
"""

PAPER_TASK = {"twitter-pos": "POS", "conll2003": "NER", "ewt-large": "CCG"}

#: Table 1 (BLSTM-CRF energy, test): columns CNN, BLSTM, seq2seq.
TABLE1 = {
    "POS": {"local": (89.6, 88.0, 88.9), "infnet": (89.9, 89.5, 89.7), "gd": 89.1,
            "viterbi": 89.2},
    "NER": {"local": (79.9, 85.0, 85.3), "infnet": (82.2, 85.4, 86.1), "gd": 84.4,
            "viterbi": 87.2},
    "CCG": {"local": (90.6, 92.2, 92.7), "infnet": (91.3, 92.8, 92.9), "gd": 89.0,
            "viterbi": 92.4},
}

#: Table 2 (dev, H = 100): CNN {1,3} vs {1,5}.
TABLE2 = {
    "POS": {"local": (89.2, 88.7), "infnet": (89.6, 89.0)},
    "NER": {"local": (84.6, 85.4), "infnet": (86.7, 86.8)},
    "CCG": {"local": (89.5, 90.4), "infnet": (90.3, 91.4)},
}

#: Table 3 (examples / second, batch size 10, GPU).
TABLE3 = {
    "POS": {"cnn": 12500, "blstm": 1250, "seq2seq": 357, "viterbi": 500, "gd": 20},
    "NER": {"cnn": 10000, "blstm": 1000, "seq2seq": 294, "viterbi": 360, "gd": 23},
    "CCG": {"cnn": 6666, "blstm": 1923, "seq2seq": 1000, "viterbi": 232, "gd": 16},
}

#: Table 4 (BLSTM-CRF+ energy, test): infnet+ architecture CNN / seq2seq / BLSTM.
TABLE4 = {
    "POS": {"local": 91.3, "infnet": 91.3, "gd": 90.8, "viterbi": 90.9},
    "NER": {"local": 90.5, "infnet": 90.8, "gd": 89.8, "viterbi": 91.6},
    "CCG": {"local": 94.1, "infnet": 94.2, "gd": 90.4, "viterbi": 94.3},
}

#: Table 5 (NER, BLSTM-CRF+).
TABLE5 = {"local": 90.3, "one": 90.7, "two": 91.1, "viterbi": 91.6}

#: Table 6 (BLSTM-CRF+ energy, test): (score, average energy).
TABLE6 = {
    "POS": {"gold": (100, -159.65), "viterbi": (90.9, -163.20),
            "gd": {10: (89.2, -161.69), 20: (90.8, -163.06), 30: (90.8, -163.02),
                   40: (90.7, -163.03), 50: (90.8, -163.04)},
            "infnet": (91.3, -162.07), "infnet_discrete": (91.3, -160.87),
            "tailor": {3: (91.0, -162.59), 5: (90.9, -162.81), 10: (91.3, -162.85)},
            "warm": {3: (91.4, -163.06), 5: (91.2, -163.12), 10: (91.2, -163.15)}},
    "NER": {"gold": (100, -230.63), "viterbi": (91.6, -231.53),
            "gd": {10: (81.9, -227.92), 20: (89.1, -231.17), 30: (89.6, -231.30),
                   40: (89.8, -231.34), 50: (89.8, -231.35)},
            "infnet": (90.8, -231.19), "infnet_discrete": (90.8, -231.34),
            "tailor": {3: (91.3, -231.32), 5: (91.2, -231.37), 10: (91.5, -231.39)},
            "warm": {3: (91.4, -231.42), 5: (91.4, -231.45), 10: (91.5, -231.46)}},
    "CCG": {"gold": (100, -480.07), "viterbi": (94.3, -483.09),
            "gd": {10: (65.1, -412.81), 20: (74.6, -414.81), 30: (83.0, -447.64),
                   40: (88.6, -471.52), 50: (90.0, -476.56), 100: (90.1, -476.98),
                   500: (90.1, -476.99), 1000: (90.1, -476.99)},
            "infnet": (94.2, -481.32), "infnet_discrete": (94.2, -481.95),
            "tailor": {3: (94.3, -481.91), 5: (94.3, -482.23), 10: (94.3, -482.56)},
            "warm": {3: (94.4, -482.62), 5: (94.4, -482.64), 10: (94.4, -482.78)}},
}

#: Section 6.2 (Twitter POS): Spearman rho between perplexity and search error.
PERPLEXITY = {"BLSTM inference network": {"word": 0.282, "label": 0.195},
              "gradient descent": {"word": 0.122, "label": 0.064}}
