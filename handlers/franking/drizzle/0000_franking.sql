-- IF NOT EXISTS throughout: servers set up before modules had migrations of their own got these
-- tables from the core sequence (its former 0004_mls / 0005_franking), and keep them as they are.
CREATE TABLE IF NOT EXISTS "franking_keys" (
	"version" integer PRIMARY KEY NOT NULL,
	"hmac_key" text NOT NULL,
	"signing_seed" text NOT NULL,
	"public_key" text NOT NULL,
	"created_ts" bigint NOT NULL,
	"retired_ts" bigint
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "franking_reports" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"reporter_user_id" text NOT NULL,
	"reporter_device_id" text,
	"sender" text NOT NULL,
	"context" text NOT NULL,
	"accepted_ts" bigint NOT NULL,
	"key_version" integer NOT NULL,
	"server_frank" text NOT NULL,
	"message" text NOT NULL,
	"reason" text,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "franking_reports_once" ON "franking_reports" USING btree ("reporter_user_id","server_frank");