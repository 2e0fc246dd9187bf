CREATE TABLE "device_inbox" (
	"stream_id" bigserial PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"sender" text NOT NULL,
	"type" text NOT NULL,
	"content" text NOT NULL,
	"received_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "devices" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"display_name" text,
	"token_hash" text,
	"created_ts" bigint NOT NULL,
	"last_seen_ts" bigint,
	"last_seen_ip" text,
	CONSTRAINT "devices_user_id_device_id_pk" PRIMARY KEY("user_id","device_id")
);
--> statement-breakpoint
CREATE TABLE "federation_outbox" (
	"stream_id" bigserial PRIMARY KEY NOT NULL,
	"destination" text NOT NULL,
	"sender" text NOT NULL,
	"type" text NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"content" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "filters" (
	"filter_id" bigserial PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"filter_json" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "txn_ids" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"endpoint" text NOT NULL,
	"txn_id" text NOT NULL,
	"response" text NOT NULL,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "txn_ids_user_id_device_id_endpoint_txn_id_pk" PRIMARY KEY("user_id","device_id","endpoint","txn_id")
);
--> statement-breakpoint
CREATE TABLE "uia_sessions" (
	"session_id" text PRIMARY KEY NOT NULL,
	"user_id" text,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "users" (
	"user_id" text PRIMARY KEY NOT NULL,
	"localpart" text NOT NULL,
	"password_hash" text,
	"created_ts" bigint NOT NULL,
	"deactivated" boolean DEFAULT false NOT NULL
);
--> statement-breakpoint
CREATE INDEX "device_inbox_device" ON "device_inbox" USING btree ("user_id","device_id","stream_id");--> statement-breakpoint
CREATE UNIQUE INDEX "devices_token_hash" ON "devices" USING btree ("token_hash");--> statement-breakpoint
CREATE INDEX "federation_outbox_destination" ON "federation_outbox" USING btree ("destination","stream_id");--> statement-breakpoint
CREATE INDEX "filters_user" ON "filters" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "txn_ids_created" ON "txn_ids" USING btree ("created_ts");