"""Where a prompt's visual tokens are: its runs of image and video tokens (one per image, or
adjacent images in one run; one or several per video) and the slot of every visual token, as the
engine, the pruning ops and the trainer read them. Text between the runs is instruction for the
four-way token-type split."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VisualSpan:
    """A run of visual tokens: slots ``start`` to ``start + length - 1``."""

    start: int
    length: int


@dataclass(frozen=True)
class VisualLayout:
    """A prompt's visual tokens: ``spans`` in slot order, holding ``n_images`` images and
    ``n_videos`` videos; ``video_spans`` are the spans of video tokens among them."""

    spans: tuple[VisualSpan, ...]
    n_images: int
    n_videos: int = 0
    video_spans: tuple[VisualSpan, ...] = ()

    @property
    def n_visual(self) -> int:
        return sum(span.length for span in self.spans)

    @property
    def vis_start(self) -> int:
        """The first visual slot: the end of the system tokens."""
        return self.spans[0].start if self.spans else 0

    def slots(self) -> list[int]:
        """The slot of every visual token, in order."""
        return [s for span in self.spans for s in range(span.start, span.start + span.length)]

    def video_ranks(self) -> list[bool]:
        """For every visual token in order: does it belong to a video?"""
        videos = set(self.video_spans)
        return [span in videos for span in self.spans for _ in range(span.length)]

    def in_slot_order(self, images: list[torch.Tensor], videos: list[torch.Tensor]) -> torch.Tensor:
        """The prompt's rows ``[n_visual, d]`` in slot order, from its images' rows and its
        videos' rows (each in order; the two kinds may interleave in the prompt)."""
        if not videos:
            return torch.cat(images) if len(images) > 1 else images[0]
        is_video = torch.tensor(self.video_ranks(), device=videos[0].device)
        row = videos[0].new_empty(self.n_visual, videos[0].shape[-1])
        row[is_video] = torch.cat(videos)
        if images:
            row[~is_video] = torch.cat(images)
        return row


def find_visual_spans(ids: torch.Tensor, token_id: int) -> tuple[VisualSpan, ...]:
    """The runs of ``token_id`` in the 1-D ``ids``, in order."""
    where = (ids == token_id).nonzero()[:, 0].tolist()
    spans, start = [], None
    for i, slot in enumerate(where):
        if start is None:
            start = slot
        if i + 1 == len(where) or where[i + 1] != slot + 1:
            spans.append(VisualSpan(start, slot - start + 1))
            start = None
    return tuple(spans)


def slot_table(layouts, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(slots, real)``, both ``[B, max n_visual]``: the slot of each row's r-th visual token
    (0 past the row's count) and whether the row has an r-th visual token."""
    width = max((layout.n_visual for layout in layouts), default=0)
    slots = torch.zeros(len(layouts), width, dtype=torch.long)
    real = torch.zeros(len(layouts), width, dtype=torch.bool)
    for b, layout in enumerate(layouts):
        row = layout.slots()
        slots[b, :len(row)] = torch.tensor(row, dtype=torch.long)
        real[b, :len(row)] = True
    return slots.to(device), real.to(device)
