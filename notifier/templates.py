"""Rendering: a template name, channel and language in, (subject, body) out. Jinja2 with
StrictUndefined, so a template naming a value the notifier does not provide fails loudly (and
`parcel notify lint` renders every template once with sample values to prove it).

Email and push templates: the first line is the subject (title), the rest the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

REASON_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "address_not_found": "we could not find the address", "access_denied": "we could not get access",
        "recipient_unavailable": "nobody was available to receive it", "refused": "the delivery was refused",
        "damaged": "the parcel was damaged in transit", "weather_delay": "it is delayed by weather",
        "customs_hold": "it is held at customs", "missorted": "it was missorted and is being rerouted",
        "vehicle_breakdown": "it is delayed by a vehicle breakdown",
        "max_attempts_reached": "the last delivery attempt failed",
    },
    "es": {
        "address_not_found": "no encontramos la dirección", "access_denied": "no pudimos acceder",
        "recipient_unavailable": "no había nadie para recibirlo", "refused": "se rechazó la entrega",
        "damaged": "el paquete sufrió daños en el transporte", "weather_delay": "se retrasa por el clima",
        "customs_hold": "está retenido en aduanas", "missorted": "se clasificó mal y se está redirigiendo",
        "vehicle_breakdown": "se retrasa por una avería del vehículo",
        "max_attempts_reached": "falló el último intento de entrega",
    },
}
STATUS_TEXT: dict[str, dict[str, str]] = {
    "en": {"DELIVERED": "delivered", "OUT_FOR_DELIVERY": "out for delivery", "IN_TRANSIT": "in transit",
           "PICKED_UP": "picked up", "DELIVERY_ATTEMPTED": "delivery attempted", "EXCEPTION": "delayed",
           "RETURN_TO_SENDER": "returning to sender", "LABEL_CREATED": "label created"},
    "es": {"DELIVERED": "entregado", "OUT_FOR_DELIVERY": "en reparto", "IN_TRANSIT": "en tránsito",
           "PICKED_UP": "recogido", "DELIVERY_ATTEMPTED": "intento de entrega", "EXCEPTION": "con retraso",
           "RETURN_TO_SENDER": "de vuelta al remitente", "LABEL_CREATED": "etiqueta creada"},
}

SAMPLE_CONTEXT: dict[str, Any] = {
    "name": "Ana Silva", "recipient_name": "Ana Silva", "audience": "recipient",
    "tracking_number": "PT0123456789ABCDEFX", "tracking_url": "http://t/PT0", "status": "DELIVERED",
    "status_text": "delivered", "eta": "Tue 14:00", "reason_code": "refused", "reason_text": "refused",
    "attempt_count": 1, "max_attempts": 3, "reschedule_url": "http://t/r/x", "facility": {"city": "Austin"},
    "return_tracking_number": "PT1", "return_tracking_url": "http://t/PT1", "severity": "info",
    "kind": "window", "window": "Tue 10:00-12:00", "pickup_name": "Station", "pickup_address": "1 Main St",
}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Rendered:
    subject: str | None
    body: str


class Templates:
    def __init__(self, directory: Path, default_language: str = "en") -> None:
        self.directory = directory
        self.default_language = default_language
        self.env = Environment(loader=FileSystemLoader(str(directory)), undefined=StrictUndefined,
                               autoescape=False, keep_trailing_newline=False)

    def render(self, channel: str, language: str, template: str, context: dict[str, Any]) -> Rendered:
        """Render in `language`, falling back to the default language when it has no such template."""
        lang = language
        try:
            tpl = self.env.get_template(f"{channel}/{lang}/{template}.j2")
        except TemplateNotFound:
            lang = self.default_language
            try:
                tpl = self.env.get_template(f"{channel}/{lang}/{template}.j2")
            except TemplateNotFound:
                raise TemplateError(f"no template {template!r} for channel {channel!r}") from None
        ctx = {**context, "reason_text": REASON_TEXT.get(lang, REASON_TEXT["en"]).get(
            str(context.get("reason_code")), str(context.get("reason_code") or "")),
               "status_text": STATUS_TEXT.get(lang, STATUS_TEXT["en"]).get(str(context.get("status")), "")}
        text = tpl.render(**ctx).strip()
        if channel in ("email", "push"):
            subject, _, body = text.partition("\n")
            return Rendered(subject.strip(), body.strip())
        return Rendered(None, text)


def lint_templates(templates: Templates, names: set[str], channels: tuple[str, ...],
                   languages: list[str]) -> list[str]:
    """Render every (channel, language, template) once with sample values: syntax errors and
    undefined variables show up here, not at 3 a.m. in the job."""
    problems: list[str] = []
    for ch in channels:
        for lang in languages:
            for name in sorted(names):
                path = templates.directory / ch / lang / f"{name}.j2"
                if not path.exists():
                    continue
                try:
                    r = templates.render(ch, lang, name, dict(SAMPLE_CONTEXT))
                except Exception as exc:  # noqa: BLE001 - every template error is a lint finding
                    problems.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                if ch in ("email", "push") and not (r.subject and r.body):
                    problems.append(f"{path}: needs a subject line and a body")
    return problems
