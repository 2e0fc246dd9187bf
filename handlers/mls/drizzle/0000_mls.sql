-- IF NOT EXISTS throughout: servers set up before modules had migrations of their own got these
-- tables from the core sequence (its former 0004_mls / 0005_franking), and keep them as they are.
CREATE TABLE IF NOT EXISTS "mls_group_members" (
	"group_id" text NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"added_epoch" bigint NOT NULL,
	CONSTRAINT "mls_group_members_group_id_user_id_device_id_pk" PRIMARY KEY("group_id","user_id","device_id")
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "mls_groups" (
	"group_id" text PRIMARY KEY NOT NULL,
	"epoch" bigint NOT NULL,
	"creator_user_id" text NOT NULL,
	"last_commit_sha256" text,
	"created_ts" bigint NOT NULL,
	"updated_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "mls_key_packages" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"ref" text NOT NULL,
	"ciphersuite" text NOT NULL,
	"key_package" text NOT NULL,
	"last_resort" boolean NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "mls_key_packages_ref" ON "mls_key_packages" USING btree ("user_id","device_id","ref");--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "mls_key_packages_last_resort" ON "mls_key_packages" USING btree ("user_id","device_id") WHERE last_resort;--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "mls_key_packages_claim" ON "mls_key_packages" USING btree ("user_id","device_id","last_resort","id");