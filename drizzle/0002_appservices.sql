CREATE TABLE "appservice_pending_txns" (
	"appservice_id" text PRIMARY KEY NOT NULL,
	"txn_id" text NOT NULL,
	"body" text NOT NULL,
	"queue_ids" text NOT NULL,
	"inbox_ids" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "appservice_queue" (
	"stream_id" bigserial PRIMARY KEY NOT NULL,
	"appservice_id" text NOT NULL,
	"inbox_stream_id" bigint,
	"exclusive" boolean NOT NULL,
	"type" text NOT NULL,
	"sender" text NOT NULL,
	"content" text NOT NULL,
	"to_user_id" text NOT NULL,
	"to_device_id" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "appservice_queue_as" ON "appservice_queue" USING btree ("appservice_id","stream_id");