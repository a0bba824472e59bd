"""Fake of ``modules/sd_hijack.py`` + the wrappers of ``modules/sd_hijack_clip.py`` and
``modules/sd_hijack_open_clip.py`` (A1111 v1.10.1, 82a973c0).

``hijack`` wraps each text encoder's ``token_embedding`` in ``EmbeddingsWithFixes`` and the whole
embedder in a ``...WithCustomWords`` wrapper (SD1: ``FrozenCLIPEmbedderWithCustomWords``; SDXL,
chosen per embedder by class *name*: ``FrozenCLIPEmbedderForSDXLWithCustomWords`` and
``FrozenOpenCLIPEmbedder2WithCustomWords``, then ``m.cond_stage_model = m.conditioner``). Every
wrapper keeps the original module in an attribute ``wrapped``, so parameter *names* gain
``wrapped.`` segments while the Parameter objects stay the same. ``undo_hijack`` unwraps them
and deletes SDXL's ``cond_stage_model`` alias. A loaded model starts hijacked.
"""

from torch import nn


class EmbeddingsWithFixes(nn.Module):
    def __init__(self, wrapped, embeddings, textual_inversion_key="clip_l"):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings
        self.textual_inversion_key = textual_inversion_key


class FrozenCLIPEmbedderWithCustomWords(nn.Module):
    def __init__(self, wrapped, hijack):
        super().__init__()
        self.wrapped = wrapped
        self.__dict__["hijack"] = hijack


class FrozenCLIPEmbedderForSDXLWithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    pass


class FrozenOpenCLIPEmbedder2WithCustomWords(FrozenCLIPEmbedderWithCustomWords):
    pass


_SDXL_WRAPPERS = (FrozenCLIPEmbedderForSDXLWithCustomWords, FrozenOpenCLIPEmbedder2WithCustomWords)


class StableDiffusionModelHijack:
    def __init__(self):
        self.clip = None
        self.layers = None
        self.optimization_method = None
        self.embedding_db = None

    def hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner is not None:
            for i, embedder in enumerate(conditioner.embedders):
                kind = type(embedder).__name__
                if kind == "FrozenCLIPEmbedder":
                    emb = embedder.transformer.text_model.embeddings
                    emb.token_embedding = EmbeddingsWithFixes(emb.token_embedding, self)
                    conditioner.embedders[i] = FrozenCLIPEmbedderForSDXLWithCustomWords(embedder, self)
                elif kind == "FrozenOpenCLIPEmbedder2":
                    embedder.model.token_embedding = EmbeddingsWithFixes(
                        embedder.model.token_embedding, self, textual_inversion_key="clip_g")
                    conditioner.embedders[i] = FrozenOpenCLIPEmbedder2WithCustomWords(embedder, self)
            m.cond_stage_model = conditioner
        elif type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedder":
            emb = m.cond_stage_model.transformer.text_model.embeddings
            emb.token_embedding = EmbeddingsWithFixes(emb.token_embedding, self)
            m.cond_stage_model = FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        self.optimization_method = "none"
        self.clip = m.cond_stage_model
        self.layers = list(m.modules())

    def undo_hijack(self, m):
        conditioner = getattr(m, "conditioner", None)
        if conditioner is not None:
            for i, embedder in enumerate(conditioner.embedders):
                if isinstance(embedder, _SDXL_WRAPPERS):
                    inner = embedder.wrapped
                    root = inner.transformer.text_model.embeddings if hasattr(inner, "transformer") else inner.model
                    if type(root.token_embedding) is EmbeddingsWithFixes:
                        root.token_embedding = root.token_embedding.wrapped
                    conditioner.embedders[i] = inner
            if "cond_stage_model" in m._modules:
                del m.cond_stage_model
        elif type(m.cond_stage_model) is FrozenCLIPEmbedderWithCustomWords:
            m.cond_stage_model = m.cond_stage_model.wrapped
            emb = m.cond_stage_model.transformer.text_model.embeddings
            if type(emb.token_embedding) is EmbeddingsWithFixes:
                emb.token_embedding = emb.token_embedding.wrapped
        self.layers = None
        self.clip = None

    def redo_hijack(self, m):
        self.undo_hijack(m)
        self.hijack(m)


model_hijack = StableDiffusionModelHijack()
