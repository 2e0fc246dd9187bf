-- MSC3944: which key and secret requests a sync response has carried to a device (see schema.ts).
CREATE TABLE "to_device_request_reads" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"sender" text NOT NULL,
	"type" text NOT NULL,
	"requesting_device_id" text NOT NULL,
	"request_id" text NOT NULL,
	"read_ts" bigint NOT NULL,
	CONSTRAINT "to_device_request_reads_user_id_device_id_sender_type_requesting_device_id_request_id_pk" PRIMARY KEY("user_id","device_id","sender","type","requesting_device_id","request_id")
);
--> statement-breakpoint
CREATE INDEX "to_device_request_reads_read" ON "to_device_request_reads" USING btree ("read_ts");
--> statement-breakpoint
-- A server without this table recorded nothing: every request already queued may have been in a
-- response, so each counts as carried, and its cancellation will be delivered.
INSERT INTO "to_device_request_reads" ("user_id", "device_id", "sender", "type", "requesting_device_id", "request_id", "read_ts")
SELECT DISTINCT "user_id", "device_id", "sender", "type", "content"::jsonb->>'requesting_device_id', "content"::jsonb->>'request_id', (extract(epoch from now()) * 1000)::bigint
FROM "device_inbox"
WHERE "type" IN ('m.room_key_request', 'm.secret.request')
  AND "content"::jsonb->>'action' = 'request'
  AND "content"::jsonb->>'requesting_device_id' IS NOT NULL
  AND "content"::jsonb->>'request_id' IS NOT NULL;
