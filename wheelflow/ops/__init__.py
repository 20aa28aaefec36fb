"""Operations around releases: the upload ledger, monitor and incidents, alerts, upstream, backfill, automations."""
