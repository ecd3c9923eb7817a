"""The field method of a sequence: chosen once by ``auto``, re-checked on every frame."""

import dataclasses

from ._cross_validation import default_candidates, n_folds_for
from ._methods import METHODS
from ._model import OffsetModel, check_options

__all__ = ["SEQUENCE_SELECTION", "SequenceChoice"]

SEQUENCE_SELECTION = "auto, sequence"
"""The ``selection`` of a model that kept its sequence's choice (``SELECTED`` in a map)."""

_AUTO = "auto"
# Cross-validating a thin-plate spline costs an O(n**3) solve per smoothing;
# the quadrant fields and the polynomials cost little more than the referees
# every cross-validation fits anyway.
_COSTLY = "thin-plate"


@dataclasses.dataclass(frozen=True)
class SequenceChoice:
    """The field ``method="auto"`` chose on one frame of a sequence, for its other frames.

    ``auto`` cross-validates some 13 candidate fields on every star table;
    in a sequence it nearly always chooses the same one. A `SequenceChoice`
    is made once, from the first table's ``auto`` model (`from_model`); each
    other table then fits that field (method and parameter, on the same
    trend and clipping), and re-checks it on its own stars: it cross-validates
    the field against the candidates of ``auto`` that cost little (the
    quadrant fields and the polynomials, whose fits every cross-validation
    makes anyway to tell mismatched stars; not the thin-plate splines, each
    an O(n**3) solve), and keeps it if it scores best among them. Otherwise,
    or if the stars cannot take the field (too few for its polynomial, for
    instance), the table gets its own ``auto``, as without a sequence.

    A frame's model depends only on the choice and its own table: the same
    in any process (the choice pickles), in any order.

    Parameters
    ----------
    method : str
        The chosen method: ``"quadrant"``, ``"polynomial"`` or ``"thin-plate"``.
    value : float or int
        Its parameter's value.
    trend : str or `None`
        The trend under the field, as for `OffsetModel`.
    clip : float or `None`
        The sigma-clipping threshold, as for `OffsetModel`.
    source : str or `None`, optional
        The table it was chosen on, for messages.
    cv_rms : float or `None`, optional
        The chosen field's CV RMS on that table (px).

    Raises
    ------
    ValueError
        If the method is not a field method, or an option is out of range.

    See Also
    --------
    OffsetModel, write_maps

    Examples
    --------
    >>> import numpy as np
    >>> from astro_offsets import OffsetModel
    >>> from astro_offsets.field import SequenceChoice
    >>> def frame(seed):
    ...     rng = np.random.default_rng(seed)
    ...     x, y = rng.uniform(0, 1000, (2, 300))
    ...     dx = 3 + 2e-3 * x + 2e-9 * x**3 + rng.normal(0, 0.05, 300)
    ...     dy = -1 + 3e-9 * y**3 + rng.normal(0, 0.05, 300)
    ...     return x, y, dx, dy
    >>> choice = SequenceChoice.from_model(OffsetModel(*frame(1), method="auto"))
    >>> choice
    SequenceChoice('polynomial', 3, trend='affine', clip=3.0)
    >>> model = choice.fit(*frame(2))
    >>> model.meta["selection"], model.parameters
    ('auto, sequence', {'degree': 3})
    """

    method: str
    value: float | int
    trend: str | None
    clip: float | None
    source: str | None = dataclasses.field(default=None, compare=False)
    cv_rms: float | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if self.method not in METHODS:
            choices = ", ".join(map(repr, METHODS))
            raise ValueError(f"method must be one of {choices}, got {self.method!r}")
        parameter = METHODS[self.method].parameter
        _, value, _ = check_options(self.method, self.clip, self.trend, **{parameter: self.value})
        object.__setattr__(self, "value", value)

    @classmethod
    def from_model(cls, model):
        """Return the choice of a model made with ``method="auto"``.

        Parameters
        ----------
        model : `OffsetModel`
            Made with ``method="auto"`` from the sequence's first table.

        Returns
        -------
        `SequenceChoice`

        Raises
        ------
        ValueError
            If the model's field was not chosen by cross-validation: made
            with another method, or from too few stars to cross-validate.
        """
        if model.meta.get("selection") != _AUTO:
            raise ValueError(
                f"{model.meta.get('source') or 'stars'}: no field chosen by cross-validation "
                "(a sequence's choice is made by method='auto' on at least 2 stars)"
            )
        return cls(
            model.method,
            model.parameters[METHODS[model.method].parameter],
            model.trend,
            model.meta.get("clip"),
            source=model.meta.get("source"),
            cv_rms=model.cv_rms,
        )

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.method!r}, {self.value!r}, trend={self.trend!r}, "
            f"clip={self.clip!r})"
        )

    def __str__(self):
        field = f"{self.method} {METHODS[self.method].describe(self.value)}"
        if self.cv_rms is not None:
            field += f", CV RMS {self.cv_rms:.4f} px"
        return field + (f" (on {self.source})" if self.source else "")

    @property
    def parameters(self):
        """The method's parameter and its value: ``{"degree": 4}``."""
        return {METHODS[self.method].parameter: self.value}

    def options(self, method=None):
        """Return the field options of `OffsetModel` for this choice, or for ``method``.

        Examples
        --------
        >>> from astro_offsets.field import SequenceChoice
        >>> SequenceChoice("polynomial", 4, "affine", 3.0).options()
        {'method': 'polynomial', 'trend': 'affine', 'clip': 3.0, 'degree': 4}
        """
        options = {"method": method or self.method, "trend": self.trend, "clip": self.clip}
        if method is None:
            options.update(self.parameters)
        return options

    def fit(self, x, y, x_offset, y_offset, *, uncertainty=None, source=None):
        """Return the model of a frame's stars: this choice, re-checked, or the frame's own auto.

        Parameters
        ----------
        x, y, x_offset, y_offset, uncertainty, source
            As for `OffsetModel`.

        Returns
        -------
        `OffsetModel`
            With ``meta["selection"]`` ``"auto, sequence"`` if it kept the
            choice (its `~OffsetModel.cv_rms` is known from the re-check),
            ``"auto"`` if the frame chose its own.
        """
        return self._model(
            lambda **options: OffsetModel(
                x, y, x_offset, y_offset, uncertainty=uncertainty, source=source, **options
            )
        )

    def model(self, table, *, source=None, **columns):
        """Return the model of a star table: this choice, re-checked, or the table's own auto.

        Parameters
        ----------
        table : `~astropy.table.Table`
            The star table, as for `OffsetModel.from_table`.
        source : str or `None`, optional
            Its name in messages and provenance.
        **columns
            ``centroid_columns``, ``offset_columns``, ``uncertainty_columns``
            as for `OffsetModel.from_table`.

        Returns
        -------
        `OffsetModel`
            As for `fit`.

        Raises
        ------
        ValueError
            As `OffsetModel.from_table`.
        """
        return self._model(
            lambda **options: OffsetModel.from_table(table, source=source, **columns, **options)
        )

    def _model(self, make):
        """Fit the choice with ``make(**options)``; re-check it, or make the frame's auto."""
        try:
            model = make(**self.options())
        except ValueError:
            model = None  # too few stars for the field: the frame chooses its own
        if model is not None and self._keeps_choice(model):
            model.meta["selection"] = SEQUENCE_SELECTION
            return model
        return make(**self.options(_AUTO))

    def _keeps_choice(self, model):
        """Return whether the frame's stars keep the choice (see the class's docstring)."""
        n = len(model)
        if n_folds_for(n) < 2:
            return False
        ours = (self.method, METHODS[self.method].check(self.value))
        offered = default_candidates(n)
        if ours not in offered:
            return False
        return model._score([c for c in offered if c == ours or c[0] != _COSTLY])
