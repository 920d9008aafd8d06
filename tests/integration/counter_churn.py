"""Random changes to players, from a thread of the test or from a process of its own.

Every kind of change a counter must follow: creates (with and without a team), moves,
``when`` flips, summed-value changes, two saves of a row in one transaction, rolled-back
changes (whole and in a savepoint), instance deletes and queryset deletes.

Run as ``python counter_churn.py SEED STEPS TEAM_ID...`` for a second web process.
"""

import os
import random
import sys
from decimal import Decimal

if __name__ == "__main__":
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()

from django.db import connection, transaction

from tests.testapp.models import Player


class Rollback(Exception):
    pass


def churn(seed: int, steps: int, team_ids: list[int]) -> None:
    """Make ``steps`` random changes to players of ``team_ids`` (and to team-less ones)."""
    rng = random.Random(seed)
    mine: list[int] = []

    def team() -> int | None:
        return rng.choice([*team_ids, None]) if rng.random() < 0.2 else rng.choice(team_ids)

    def points() -> Decimal:
        return Decimal(rng.randrange(0, 1000)) / 100

    def mine_player() -> Player | None:
        """One of this churner's players, fresh from the database."""
        return Player.objects.get(pk=rng.choice(mine)) if mine else None

    for _ in range(steps):
        kind = rng.randrange(8)
        player = mine_player() if kind else None
        if player is None or kind == 0:
            created = Player.objects.create(
                name="p", team_id=team(), points=points(), active=rng.random() < 0.7
            )
            mine.append(created.pk)
        elif kind == 1:
            player.team_id = team()
            player.save()
        elif kind == 2:
            player.active = not player.active
            player.save()
        elif kind == 3:
            player.points = points()
            player.save(update_fields=["points"])
        elif kind == 4:
            with transaction.atomic():
                player.points = points()
                player.save()
                player.active = not player.active
                player.team_id = team()
                player.save()
        elif kind == 5:
            try:
                with transaction.atomic():
                    Player.objects.create(name="ghost", team_id=team(), points=points())
                    with transaction.atomic():
                        player.team_id = team()
                        player.save()
                    raise Rollback
            except Rollback:
                pass
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        player.active = not player.active
                        player.save()
                        raise Rollback
                except Rollback:
                    pass
        elif kind == 6:
            mine.remove(player.pk)
            player.delete()
        else:
            doomed = mine[-2:]
            del mine[-2:]
            Player.objects.filter(pk__in=doomed).delete()
    connection.close()


if __name__ == "__main__":
    churn(int(sys.argv[1]), int(sys.argv[2]), [int(arg) for arg in sys.argv[3:]])
