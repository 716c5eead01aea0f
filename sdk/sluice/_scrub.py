"""Client-side masking (`sluice.init(scrub=True)`): the receiver's engine, applied in the app.

For teams whose logs must not leave the process with a secret in them even on the way to their
own receiver. It runs on the shipper's background thread, once per batch (one pre-scan for all
strings of the batch), never on the app's logging call, and before anything is spilled to disk.
Scope: log bodies and string attribute values of bridged log records, with the engine's key rules;
spans and metrics are masked by the receiver.
"""

from __future__ import annotations

from typing import Any

from sluice.masking import Masker

MASKED_ATTRIBUTE = "sluice.masked"


class LogScrubber:
    """Masks a batch of shipper items; returns the batch with changed items replaced."""

    def __init__(self, masker: Masker | None = None) -> None:
        self.masker = masker or Masker()

    def __call__(self, items: list[Any]) -> list[Any]:
        texts: list[str] = []
        keys: list[str | None] = []
        where: list[tuple[int, str | None]] = []
        for n, item in enumerate(items):
            body = item[4]
            if type(body) is str and body:
                texts.append(body)
                keys.append(None)
                where.append((n, None))
            attrs = item[11]
            if attrs:
                for key, value in attrs.items():
                    if type(value) is str and value:
                        texts.append(value)
                        keys.append(key)
                        where.append((n, key))
        if not texts:
            return items
        result = self.masker.mask_many(texts, keys)
        if not result.hits and not result.drop:
            return items
        out = list(items)
        hits_per_item: dict[int, int] = {}
        for index, hits in result.hits.items():
            value = result.values[index]
            n, key = where[index]
            item = out[n]
            if key is None:
                item = (*item[:4], value, *item[5:])
            else:
                attrs = dict(item[11])
                attrs[key] = value
                item = (*item[:11], attrs, *item[12:])
            out[n] = item
            hits_per_item[n] = hits_per_item.get(n, 0) + hits
        for n, hits in hits_per_item.items():
            item = out[n]
            attrs = dict(item[11] or {})
            attrs[MASKED_ATTRIBUTE] = attrs.get(MASKED_ATTRIBUTE, 0) + hits
            out[n] = (*item[:11], attrs, *item[12:])
        dropped = {where[index][0] for index in result.drop}
        return [item for n, item in enumerate(out) if n not in dropped] if dropped else out
