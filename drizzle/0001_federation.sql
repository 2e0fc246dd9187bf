CREATE TABLE "federation_inbound_messages" (
	"origin" text NOT NULL,
	"message_id" text NOT NULL,
	"received_ts" bigint NOT NULL,
	CONSTRAINT "federation_inbound_messages_origin_message_id_pk" PRIMARY KEY("origin","message_id")
);
--> statement-breakpoint
CREATE TABLE "federation_pending_txns" (
	"destination" text PRIMARY KEY NOT NULL,
	"txn_id" text NOT NULL,
	"body" text NOT NULL,
	"stream_ids" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "remote_server_keys" (
	"server_name" text NOT NULL,
	"key_id" text NOT NULL,
	"public_key" text NOT NULL,
	"valid_until_ts" bigint NOT NULL,
	"fetched_ts" bigint NOT NULL,
	CONSTRAINT "remote_server_keys_server_name_key_id_pk" PRIMARY KEY("server_name","key_id")
);
--> statement-breakpoint
CREATE TABLE "server_signing_keys" (
	"key_id" text PRIMARY KEY NOT NULL,
	"seed" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE INDEX "federation_inbound_received" ON "federation_inbound_messages" USING btree ("received_ts");