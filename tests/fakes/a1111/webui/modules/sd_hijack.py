"""Fake of ``modules/sd_hijack.py`` + the SD1 part of ``modules/sd_hijack_clip.py`` (A1111 v1.10.1, 82a973c0).

``hijack`` wraps the text encoder's ``token_embedding`` in ``EmbeddingsWithFixes`` and the whole
``FrozenCLIPEmbedder`` in ``FrozenCLIPEmbedderWithCustomWords``; both keep the original module in
an attribute ``wrapped``, so parameter *names* gain ``wrapped.`` segments while the Parameter
objects stay the same. ``undo_hijack`` unwraps both. A loaded model starts hijacked.
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


class StableDiffusionModelHijack:
    def __init__(self):
        self.clip = None
        self.layers = None
        self.optimization_method = None
        self.embedding_db = None

    def hijack(self, m):
        if type(m.cond_stage_model).__name__ == "FrozenCLIPEmbedder":
            emb = m.cond_stage_model.transformer.text_model.embeddings
            emb.token_embedding = EmbeddingsWithFixes(emb.token_embedding, self)
            m.cond_stage_model = FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        self.optimization_method = "none"
        self.clip = m.cond_stage_model
        self.layers = list(m.modules())

    def undo_hijack(self, m):
        if type(m.cond_stage_model) is FrozenCLIPEmbedderWithCustomWords:
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
