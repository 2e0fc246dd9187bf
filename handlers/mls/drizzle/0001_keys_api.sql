-- KeyPackages moved to the keys API (MSC4244: `mls:<key_id>` one-time keys), so the to-device
-- directory's table goes; its packages were MLSMessage-wrapped, which MSC4244 clients do not
-- upload, and clients upload fresh ones when their `mls` count runs low.
DROP TABLE IF EXISTS "mls_key_packages" CASCADE;--> statement-breakpoint
-- The event family a group's fan-out goes out in; groups made before the stable names are unstable.
ALTER TABLE "mls_groups" ADD COLUMN "family" text DEFAULT 'org.matrix.msc4244' NOT NULL;
