"""Cheap routing first: rules recognise clear intents in English and Portuguese; unsure requests go to the model.

Each rule that matches a request adds its weight to its intent; "answer" (a plain question) starts at DEFAULT. An
intent wins only when it leads every other by MARGIN. Anything closer is unsure: `classify` returns None and the
supervisor asks the model (one structured call) instead of guessing. A rule of weight HINT (a picture word, a price
word, a question mark) counts only for an intent no stronger rule matched: alone it can make the rules unsure, never
decide; so a statement nothing else matches ("Fix the pipeline") is unsure rather than silently a plain question.
Text is read lower-case without accents, after IDIOMS rewrote phrases that use a picture word in another sense.
bench/routing.py measures them on tests/data/routing_requests.jsonl; tests/unit/test_routing_set.py keeps the floor.
"""

from __future__ import annotations

import re
import unicodedata

from atelier.graphs.state import Intent

__all__ = ["DEFAULT", "HINT", "IDIOMS", "MARGIN", "RULES", "classify", "normalise", "scores"]

DEFAULT = 1  # the weight every request has as a plain question (a question mark or a question word adds a hint)
MARGIN = 2  # how far the best intent must lead the next one for the rules to decide
HINT = 1  # a rule of this weight counts only for an intent no stronger rule matched: it can make the rules unsure

# Text is matched lower-case and without accents ("Mude o fundo desta foto" → "mude o fundo desta foto"). Words that
# are English in one language and Portuguese in the other ("do", "no", "a") are only read beside the right nouns.
_IMAGE_EN = (r"images?|pictures?|pics?|photos?|photographs?|illustrations?|drawings?|paintings?|renders?|artworks?|"
             r"logos?|posters?|wallpapers?|icons?|portraits?|sketch(?:es)?|banners?|watercolou?rs?|thumbnails?|"
             r"shots?(?! list)|visuals?|stickers?|covers?|mascots?|avatars?|emojis?|tattoos?|murals?|memes?|"
             r"infographics?|diagrams?|mockups?|cartoons?|comics?|prints?|cards?")
_IMAGE_PT = (r"imagem|imagens|fotos?|fotografias?|ilustracao|ilustracoes|desenhos?|pinturas?|logotipos?|cartaz|"
             r"cartazes|papel de parede|retratos?|icones?|esbocos?|miniaturas?|aquarelas?|aguarelas?|artes?|capas?|"
             r"mascotes?|adesivos?|autocolantes?|figurinhas?|estampas?|tatuage(?:m|ns)|murais?|infograficos?|"
             r"diagramas?|cartoons?|banda desenhada|quadrinhos|cart(?:ao|oes)|postais?")
_IMAGE = f"(?:{_IMAGE_EN}|{_IMAGE_PT})"
_DOCUMENT_EN = r"docs|documents?|notes|guide|guidelines|manual|handbook|knowledge base|pdf|contract|journal|diary|" \
               r"folder|files|wiki|thesis|minutes|brief|briefing|policy|regulations|playbook|(?:brand )?book"
_DOCUMENT_PT = r"documentos?|notas|apontamentos|guia|diretrizes|manual|base de conhecimento|pdf|contrato|diario|" \
               r"receitas|ficheiros|arquivos|tese|atas?|regulamento|politica|briefing"
_MINE_PT = r"(?:meus|minhas|meu|minha|nosso|nossa|nossos|nossas)"
_TEXT = (r"(?:(?<!shot )lists?|listas?(?! de (?:fotos|imagens))|checklists?|plans?|planos?|roteiros?|resumos?|"
         r"summar(?:y|ies)|e-?mails?|letters?|cartas?|poems?|poemas?|haikus?|stor(?:y|ies)|historias?|essays?|"
         r"textos?|names?|nomes?|ideas?|ideias?|reports?|relatorios?|outlines?|contracts?|contratos?|tables?|"
         r"tabelas?|code|codigo|scripts?|schedules?|itinerar(?:y|ies)|paragraphs?|paragrafos?|slogans?|tweets?|"
         r"titles?|titulos?|jokes?|piadas?|strateg(?:y|ies)|estrategias?|process(?:es)?|processos?|systems?|sistemas?|"
         r"proposals?|propostas?|methods?|metodos?|courses?|cursos?|curricul(?:um|o)|"
         r"cronogramas?|timelines?|presentations?|apresentacoes|apresentacao|funnels?|funis|funil|tips|dicas|advice|"
         r"conselhos|suggestions?|sugestoes|reasons|razoes|steps|passos|captions?|legendas?|horarios?|sentences?|"
         r"frases?|words|palavras|repl(?:y|ies)|respostas?|messages?|mensagens?)")
# Sentence start, then a polite request ("please", "can you", "pode", "quero que"): what follows is asked for.
_ASK = (r"(?:^|[.,:;!?] )(?:please |pls |por favor,? )?(?:(?:can|could|would|will) you (?:please )?|"
        r"i(?:'d| would) like (?:you )?to |i want (?:you )?to |let'?s |(?:voce |tu )?(?:pode|podes|poderia|"
        r"poderias|consegue|consegues) |quero que (?:voce |tu )?|gostaria que (?:voce )?)?")
# Verbs that make a picture ("draw a cat", "gere uma"), and words that ask for something ("make me a", "quero uma").
_DRAW = r"draw|paint|sketch|render|doodle|generate|desenh(?:e|a|ar)|pint(?:e|a|ar)|esboc(?:e|a|ar)|ger(?:e|a|ar)"
_WANT = (r"make|create|design|produce|give me|i need|we need|i want|i'd like|i would like|i'd love|i would love|"
         r"can i (?:get|have)|adoraria|gostava de|"
         r"cri(?:e|a|ar)|fa(?:ca|z-me|ze-me|zer)|me faz|me faca|produz(?:a|e|ir)|quero(?! ver)|queria|preciso de|"
         r"gostaria de|me (?:da|de)|da-me")
_NEW = r"(?:an?|some|one|two|three|four|five|a few|\d+|um|uma|uns|umas)"
_CHANGE = (r"(?:edit|change|remove|erase|delete|replace|swap|recolou?r|turn|convert|put|add|crop|blur|brighten|darken|"
           r"lighten|fix|upscale|enhance|extend|retouch|colou?ri[sz]e|sharpen|rotate|flip|resize|take|mud(?:e|a)|"
           r"edit(?:e|a)|remov(?:e|a)|apag(?:a|ue)|substitu(?:a|i)|tro(?:ca|que)|colo(?:ca|que)|adicion(?:a|e)|"
           r"acrescent(?:a|e)|poe|ponha|deix(?:a|e)|clarei(?:a|e)|escurec(?:e|a)|corrij(?:a)|corrig(?:e)|"
           r"recort(?:a|e)|desfo(?:ca|que)|transform(?:a|e)|aument(?:a|e)|melhor(?:a|e)|ampli(?:e|a)|estend(?:a|e)|"
           r"reto(?:ca|que)|tir(?:a|e))")
_EARLIER = r"(?:earlier|previous|old|older|past|last|latest|recent|antig[ao]s?|anterior(?:es)?|ultim[ao]s?)"
_MADE = r"(?:made|generated|created|rendered|did|fiz|gerei|criei|renderizei|fizemos|geramos|criamos)"
_WHEN = r"(?:before|earlier|yesterday|last (?:week|month|session|time)|ago|ontem|antes|semana passada|ha algum tempo)"
_COST = (r"(?:how much|how long|how many|cost|costs|price|budget|bill|cheap(?:er|est)?|faster|slower|estimate|"
         r"seconds|minutes|quanto|quanta|quantas|quantos|custa|custo|preco|orcamento|barat[ao]|mais rapido|"
         r"segundos|minutos|estim\w*)")
_MAKING = (rf"(?:{_IMAGE_EN}|{_IMAGE_PT}|render\w*|generat\w*|upscal\w*|workflow|tier|quality|gera\w*|qualidade|vram|"
           r"gpu|sketch\w*|esboc\w*)")


def _rule(pattern: str, weight: int) -> tuple[re.Pattern[str], int]:
    """One compiled rule."""
    return re.compile(pattern), weight


# Phrases that use a picture word in another sense, and what the rules read instead.
IDIOMS: list[tuple[re.Pattern[str], str]] = [(re.compile(p), instead) for p, instead in (
    (r"\bpicture this\b:?", " "),  # "picture this: you have 100 euros…" frames what follows, which decides
    (r"\bpaint(?:s|ing)? (?:me |us )?an? (?:\w+ )?picture of (?=what|how|who|why|the situation|life)", " "),
    (r"\brender(?:s|ed|ing)? (?:\S+ ){1,3}?(?:inactive|useless|invalid|obsolete|void|unusable|harmless|unreadable)\b",
     " "),
    (r"\bworkflow (?:tools?|apps?|software)\b", " "),
    (r"\bpint\w*(?:-me)? um quadro (?:da situacao|geral|do que)\b", " "),
    (r"\bmake sense\b", " "),
    (r"\b(?:show|teach)(?: me| us)? how (?=to\b|do\b|i\b|you\b)", "how do i "),  # instructions, not a picture
    (r"\b(?:me )?mostr\w*(?:-me)? como (?:se )?(?=\w+(?:ar|er|ir)\b)", "como posso "),
)]

RULES: dict[Intent, list[tuple[re.Pattern[str], int]]] = {
    "answer": [
        _rule(r"(?:^|[.,:;!?] )(?:what'?s?|why|how|who|when|where|which|is|are|was|were|do|does|did|should|o que|"
              r"por ?que|como|quando|onde|quem|qual|quais|que|quanto|quanta|quantos|quantas)\b", 1),
        _rule(r"(?:^|[.,:;!?] )(?:explain|describe|define|tell me|summari[sz]e|translate|remind me|recommend|suggest|"
              r"explique|explica|descreva|descreve|defina|resuma|resume|traduza|traduz|recomend[ae]|suger[ei]|sugira|"
              r"conta-me|diz-me|fala-me|me (?:conta|diz|fala))\b", 2),  # asked to answer in words
        _rule(r"\?", 1),
        _rule(r"^(?:hi|hello|hey|thanks|thank you|ok|okay|good (?:morning|afternoon|evening)|bye|ola|oi|obrigad[oa]|"
              r"bom dia|boa (?:tarde|noite)|tchau|adeus)\b", 2),  # small talk
        _rule(r"\bhow (?:do|can|should|would) (?:i|we)\b|\bcomo (?:e que )?(?:eu )?(?:faco|posso|edito|devo|consigo)\b|"
              r"\bshould (?:i|we)\b|\b(?:devo|devemos|deveria)\b", 2),  # how-to and advice
        # something to write: "generate a list", "sketch out a plan", "desenhe um plano de negócios"
        _rule(rf"\b(?:{_DRAW}|{_WANT}|write|draft|compose|desenh\w*|esboc\w*|escrev\w*|redij\w*|cri\w*|fa[cz]\w*)"
              rf"(?:-(?:me|nos|lhe))?(?: up| out)?(?: \S+){{0,3}}? {_TEXT}\b", 5),
        _rule(r"\b(?:charge|sell|pay for|cobrar|cobro|vender|pagar)\b", 3),  # their own prices, not a render's
        _rule(r"\b(?:gimp|photoshop|lightroom|krita|canva|illustrator|inkscape|figma|affinity|snapseed)\b", 3),
        _rule(r"\bin words\b|\bem palavras\b|\bwithout (?:an? )?(?:image|picture)\b|\bsem (?:imagens?|fotos?)\b", 6),
    ],
    "generate": [  # "draw a cat", "make me a poster of…", a bare prompt ("a fox in the snow, watercolor")
        _rule(rf"{_ASK}(?:me )?(?:{_DRAW})(?:-me| me| us)? (?:for me |para mim )?(?:{_NEW}|the|my|our|o|a|os|as)\b",
              4),
        _rule(rf"(?:\b(?:{_WANT})|{_ASK}faz)(?: me| us|-me)? {_NEW} (?:\S+ ){{0,3}}?{_IMAGE}\b", 4),  # "make me a…"
        _rule(rf"{_ASK}(?:{_WANT}|faz)(?: me| us|-me)? {_NEW}\b", 1),  # asked to make something: maybe a picture
        _rule(r"\b(?:watercolou?r|oil painting|digital art|cinematic|photorealistic|hyperrealistic|[48]k|studio "
              r"lighting|isometric|pixel art|anime|low poly|pencil|charcoal|in the style of|bokeh|aquarela|aguarela|"
              r"oleo|arte digital|cinematografica|fotorrealista|a lapis|vintage|dramatic light|luz dramatica)\b", 2),
        _rule(rf"^(?:(?:an?|the|um|uma)\b|{_IMAGE} (?:of|de|do|da)\b)[^?]*$", 2),  # a bare prompt
        _rule(rf"^(?:an?|the|um|uma) (?:\S+ ){{0,3}}?{_IMAGE}\b[^?]*$", 2),  # "a minimalist poster of…"
        _rule(rf"\b{_IMAGE}\b", 1),
    ],
    "illustrate": [  # "what does a quokka look like?", "show me…", "explain … with a picture", "visualise…"
        _rule(r"\bwhat (?:\S+ ){1,8}?looks? like\b|\bhow (?:does|do|did|would|will) .{1,40}look\b|"
              r"\b(?:aparencia|aspec?to)\b", 5),
        _rule(r"\bshow me\b|\blet me see\b|\bmostr(?:e|a)(?:-me)?\b(?!-)|\bme mostr(?:e|a)\b|\bquero ver (?:uma|a) "
              r"(?:imagem|foto)\b", 5),
        _rule(r"\b(?:with|and show(?: me)?|com|e mostr\w*) (?:an?|uma?) (?:\S+ )?(?:picture|image|illustration|imagem|"
              r"ilustracao|foto)\b|\bshow me (?:one|it|them)\b|\band (?:illustrate|show|draw) (?:it|them|one)\b|"
              r"\be (?:ilustr|mostr)\w*", 5),
        _rule(r"\b(?:visuali[sz]e|illustrate|visualiz(?:e|a|ar)|ilustr(?:e|a|ar))\b", 4),
        _rule(r"\bimagin\w*", 1),
    ],
    "retrieve": [  # a source named ("according to our brand guide", "nas minhas notas"), what a document says
        _rule(rf"\b(?:according to|based on|from|using|in|check) (?:the |my |our )(?:\S+ ){{0,2}}?(?:{_DOCUMENT_EN})\b|"
              rf"\b(?:de acordo com|segundo|conforme|com base n?[oa]?s?|n[oa]s?|pesquis\w*) (?:[oa]s? )?"
              rf"(?:{_MINE_PT} )?(?:\S+ )?(?:{_DOCUMENT_PT})\b", 7),
        _rule(rf"\b(?:according to|de acordo com) (?:my|our|the|[oa]s?|{_MINE_PT})\b|"
              rf"\b(?:segundo|conforme) (?:[oa]s? )?{_MINE_PT}\b", 7),
        _rule(r"^(?:according to|based on|de acordo com|segundo|conforme|com base n)", 3),  # a source, maybe theirs
        _rule(r"\bwhat (?:does|do|did) (?:the|my|our) (?:\S+ ){1,3}?say\b", 2),
        _rule(rf"\b(?:my|our|the) (?:\S+ )?(?:{_DOCUMENT_EN})\b|"
              rf"\b(?:{_MINE_PT}|o|os) (?:\S+ )?(?:{_DOCUMENT_PT})\b", 4),
        _rule(r"\b(?:say|says|said|mentions?|talks?|diz|dizem|fala|falam)\b(?: \S+){0,5}? (?:about|sobre)\b|"
              r"\bmention\b|\bwhat did i write\b|\bo que (?:eu )?escrevi\b", 2),
        _rule(r"\b(?:search|look up|find|quote|check|procur\w*|pesquis\w*|busc\w*)\b", 1),
    ],
    "images": [  # their earlier pictures: "my last logo", "the poster I made yesterday", "options like…", "gallery"
        _rule(rf"\b(?:my|our|the|{_MINE_PT}) (?:\S+ ){{0,2}}?{_EARLIER} (?:\S+ ){{0,2}}?{_IMAGE}\b|"
              rf"\b{_EARLIER} {_IMAGE}\b|\b(?:{_IMAGE_PT}) (?:antig[ao]s|anteriores)\b", 3),
        _rule(rf"\b{_IMAGE} (?:\S+ ){{0,3}}?(?:(?:that |which )?(?:i|we)(?: just| already)?|que(?: eu)?(?: ja)?) "
              rf"{_MADE}\b|\b{_IMAGE} from (?:my|our)\b", 3),
        _rule(r"\b(?:options|alternatives|variations|more|others?) (?:\S+ ){0,1}?(?:like|similar to|to|as)\b "
              r"(?:\S+ ){0,2}?(?:my|our|the one)|\b(?:opcoes|alternativas|variacoes|mais|outras?) (?:\S+ ){0,1}?"
              r"(?:parecid|semelhant|como)\w*|\b(?:similar|parecid\w*|semelhant\w*) (?:to|com|a|ao|as|aos) "
              rf"(?:[oa]s? )?(?:my|our|{_MINE_PT})\b|\bmore like\b", 4),
        _rule(r"\b(?:designs?|images?|pictures?|photos?|logos?|options|ideas|posters?)\s+"
              r"(?:similar to|like (?:my|our|the ones?))\b|"
              r"\b(?:imagens|fotos|designs|opcoes|ideias|logos?) (?:parecid|semelhant)\w*", 7),
        _rule(r"\b(?:my|our) (?:gallery|history|library|archive)\b|\b(?:minha|nossa) (?:galeria|biblioteca)\b|"
              r"\b(?:meu|nosso) (?:historico|arquivo)\b", 4),
        _rule(r"\b(?:have|did) (?:i|we) (?:\S+ )?(?:made|generated|created)\b|\bi(?:'ve| have) (?:\S+ )?"
              r"(?:made|generated|created)\b|\bja (?:gerei|fiz|criei)\b", 4),
        _rule(rf"\bshow me (?:my|our|everything|all|the (?:\S+ )?{_IMAGE})\b|"
              rf"\bmostr\w*(?:-me)? (?:[oa]s )?(?:{_MINE_PT} )?(?:(?!uma? )\S+ )?{_IMAGE}\b", 4),
        _rule(rf"\bdo (?:i|we) have (?:any )?(?:\S+ )?{_IMAGE}\b|\b(?:tenho|temos) (?:\S+ )?{_IMAGE}\b", 2),
        _rule(r"\b(?:see|ver|rever|look at|olhar)\b.*\b(?:again|de novo|outra vez)\b", 3),
        _rule(rf"\b{_WHEN}\b|\bagain\b|\bde novo\b", 2),
        _rule(rf"\b(?:find|search|look (?:through|for)|pull up|bring back|retrieve|browse|encontr\w*|procur\w*|busc\w*|"
              rf"recuper\w*)\b.*\b{_IMAGE}\b|\b(?:which|what|quais|que) {_IMAGE}\b", 2),  # looking for pictures
        _rule(r"\b(?:see|variations|variacoes|new ones|novos|novas)\b", 1),
    ],
    "plan": [  # many pictures: a showcase, campaign, series or shot list; several purposes named
        _rule(r"\b(?:showcase|shot list|lista de fotos|product (?:shots|photos|images|pictures)|fotos de produto|"
              r"campaign|campanha|storyboard|lookbook|catalog(?:ue)?|catalogo|comic strip|\d+ panels|vitrine|"
              r"marketing (?:images|visuals|photos|pictures))\b", 6),
        _rule(rf"\b(?:series|set|sequence|campaign|serie|sequencia|conjunto|campanha) (?:of|de) (?:\S+ ){{0,2}}?"
              rf"{_IMAGE}\b|\bplan\w* (?:the |our |a |my |as |os )?(?:\S+ )?{_IMAGE}\b", 6),
        _rule(r"\b(?:hero|lifestyle|detail|thumbnail|close-up|principal|estilo de vida|detalhe|miniatura)\b.*"
              r"\b(?:hero|lifestyle|detail|thumbnail|close-up|estilo de vida|detalhe|miniatura)\b", 4),
        _rule(r"\b(?:hero|lifestyle|detail|thumbnail|principal)\b.*\b(?:hero|lifestyle|detail|thumbnail|"
              r"estilo de vida|detalhe|miniatura)\b.*\b(?:hero|lifestyle|detail|thumbnail|detalhe|miniatura)\b", 2),
    ],
    "cost": [  # the price or time of making pictures, VRAM, which workflow
        _rule(rf"\b{_COST}\b", 1),
        _rule(rf"^(?=.*\b{_COST}\b)(?=.*\b{_MAKING}\b)", 6),  # a price or a time, of making images
        _rule(r"\b(?:which|what|qual|que) (?:\S+ )?(?:workflow|fluxo de trabalho|fluxo)\b", 5),
        _rule(r"\bvram\b|\bgpu\b|\b\d+ ?gb\b|\bplaca (?:de video|grafica)\b|\bwhat can i run\b|\bconsigo correr\b", 3),
        _rule(r"^(?=.*\b(?:run|fit|fits|handle|roda|rodar|cabe|correr|aguenta)\b)(?=.*\b\d+ ?gb\b)|\benough vram\b|"
              r"\bgb (?:free|livres)\b", 3),
    ],
    "edit": [  # a change asked of a picture they have: "make the background of this photo blue"
        _rule(rf"{_ASK}{_CHANGE}\b|{_ASK}make (?:it|this|that|the|my) (?:\S+ ){{0,3}}?(?:{_IMAGE}|background|"
              r"sky|colou?rs?)\b", 3),
        _rule(rf"^(?=.*{_ASK}{_CHANGE}\b)(?=.*\b{_IMAGE}\b)", 2),  # a change asked of a picture
        _rule(rf"\b(?:this|that|attached|uploaded|desta|dessa|nesta|nessa|esta|essa|este|esse|deste|desse|neste|"
              rf"nesse) (?:\S+ )?{_IMAGE}\b|\b{_IMAGE} (?:\S+ ){{0,3}}?(?:i|we) (?:uploaded|sent|attached|took|"
              rf"just (?:made|generated|created))\b|\b{_IMAGE} (?:\S+ ){{0,2}}?(?:que )?(?:enviei|mandei|anexei|"
              rf"carreguei|tirei|enviad[ao]|anexad[ao]|acabei de)", 3),
        _rule(rf"\b(?:in|on|of|from) (?:my|this) (?:\S+ ){{0,2}}?{_IMAGE}\b|\b(?:in|on) the (?:\S+ )?{_IMAGE}\b|"
              rf"\b{_IMAGE} (?:of|da|do|de) (?:my|minha|meu)\b|\b(?:n[oa]s?|d[oa]s?) (?:\S+ )?(?:{_IMAGE_PT})\b|"
              rf"\b(?:my|minha|meu) (?:last|latest|previous|ultim[ao]) (?:\S+ )?{_IMAGE}\b", 2),
        _rule(r"\b(?:background|sky|watermark|white balance|resolution|fundo|ceu|marca d'agua|balanco de brancos|"
              r"resolucao)\b", 1),
    ],
}


def normalise(text: str) -> str:
    """Lower-case, accents and curly quotes dropped, spaces collapsed: what the rules read."""
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'").replace("\u2014", "-"))
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(plain.lower().split())


def scores(text: str) -> dict[Intent, int]:
    """The summed weight of the rules each intent matches in `text` (idioms removed first; no DEFAULT)."""
    lowered = normalise(text)
    for idiom, instead in IDIOMS:
        lowered = idiom.sub(instead, lowered)
    lowered = " ".join(lowered.split())
    found: dict[Intent, int] = {}
    for intent, rules in RULES.items():
        matched = [w for pattern, w in rules if pattern.search(lowered)]
        weight = sum(w for w in matched if w > HINT) or sum(matched)
        if weight:
            found[intent] = weight
    return found


def classify(text: str) -> Intent | None:
    """The intent the rules are sure of (one leads all others by MARGIN, "answer" starting at DEFAULT); else None."""
    found = scores(text)
    found["answer"] = DEFAULT + found.get("answer", 0)
    (first, best), *rest = sorted(found.items(), key=lambda item: -item[1])
    runner_up = rest[0][1] if rest else 0
    return first if best - runner_up >= MARGIN else None
