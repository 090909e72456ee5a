from collections import Counter

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django_tenants.utils import get_public_schema_name

from backups.exceptions import ClinicNotFound
from backups.management.base import RespaldoCommand
from backups.operations import retention
from backups.operations.retention import Action, Decision
from backups.services.backup import clinic_get
from backups.services.policy import policy_for
from clinics.models import Clinic

VERBS = {  # (dry run, done)
    Action.PRUNE: ("would prune", "pruned"),
    Action.DELETE_ROW: ("would delete row", "deleted row"),
    Action.KEEP: ("keep", "kept"),
    Action.LEAVE: ("leave", "left"),
}
RULES = ["newest", "daily", "weekly", "monthly", "younger than", "safety backup", "in use", "on legal hold", "failed"]


class Command(RespaldoCommand):
    help = (
        "Apply each clinic's retention policy (GFS): delete the stored objects of backups no rule keeps "
        "(their rows stay, marked expired) and failed rows past their age. Prints every decision and why."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("schema", nargs="?", help="Only this clinic (default: every clinic).")
        parser.add_argument("--dry-run", action="store_true", help="Only print what would be done; change nothing.")

    def handle(self, *args, schema, dry_run, **options) -> None:
        if schema:
            try:
                clinics = [clinic_get(schema)]
            except ClinicNotFound as exc:
                raise CommandError(str(exc)) from None
        else:
            clinics = list(Clinic.objects.exclude(schema_name=get_public_schema_name()).order_by("schema_name"))
        if dry_run:
            self.stdout.write("Dry run: nothing is changed.")
        totals: Counter[str] = Counter()
        for clinic in clinics:
            decisions = retention.prune_clinic(clinic, dry_run=dry_run)
            self._report(clinic, decisions, dry_run=dry_run)
            totals.update(_counts(decisions))
        plural = "s" if len(clinics) != 1 else ""
        dry = ", dry run" if dry_run else ""
        self.stdout.write(f"Summary ({len(clinics)} clinic{plural}{dry}): {_summary(totals, dry_run)}.")
        if totals["error"]:
            raise CommandError(f"{totals['error']} backups could not be pruned: see the lines marked FAILED above.")

    def _report(self, clinic: Clinic, decisions: list[Decision], *, dry_run: bool) -> None:
        rules = retention.Rules.of(policy_for(clinic))
        self.stdout.write(f"{clinic.schema_name} ({clinic.time_zone}): keep {rules.describe()}")
        zone = retention.clinic_zone(clinic)
        for decision in decisions:
            if decision.action == Action.LEAVE and not decision.done and decision.reasons == ("already expired",):
                continue  # the record of past pruning, not news
            self.stdout.write("  " + _line(decision, zone, dry_run=dry_run))
        counts = _counts(decisions)
        by_rule = ", ".join(f"{rule} {n}" for rule in RULES if (n := _kept_by(decisions, rule)))
        self.stdout.write(f"  {clinic.schema_name}: {_summary(counts, dry_run)}; kept by rule: {by_rule or 'none'}")


def _line(decision: Decision, zone, *, dry_run: bool) -> str:
    verb = VERBS[decision.action][0 if dry_run else 1]
    if decision.error:
        verb = f"FAILED to {'prune' if decision.action == Action.PRUNE else 'delete row'}"
    when = timezone.localtime(decision.requested_at, zone).strftime("%Y-%m-%d %H:%M %Z")
    line = f"{verb:<16} #{decision.backup_id:<6} {when:<22} {decision.kind:<11} {decision.status:<9} {decision.reason}"
    if decision.error:
        line += f" — {decision.error} (row unchanged)"
    elif decision.done and decision.done not in {"pruned", "row deleted"}:
        line += f" — {decision.done}"
    return line


def _kept_by(decisions: list[Decision], rule: str) -> int:
    return sum(1 for d in decisions if d.action == Action.KEEP and any(reason.startswith(rule) for reason in d.reasons))


def _counts(decisions: list[Decision]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for decision in decisions:
        counts["error" if decision.error else decision.action.value] += 1
    return counts


def _summary(counts: Counter[str], dry_run: bool) -> str:
    would = "would be " if dry_run else ""
    parts = [
        f"{counts[Action.KEEP]} kept",
        f"{counts[Action.PRUNE]} {would}pruned",
        f"{counts[Action.DELETE_ROW]} failed rows {would}deleted",
        f"{counts[Action.LEAVE]} left alone (pending, running or expired)",
    ]
    if counts["error"]:
        parts.append(f"{counts['error']} FAILED")
    return ", ".join(parts)
