ALTER TABLE "devices" ADD COLUMN "last_stream_id" bigint DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Devices with queued messages start from their newest; acknowledged ones are gone and need no position.
UPDATE "devices" AS d SET "last_stream_id" = q.top
FROM (SELECT "user_id", "device_id", max("stream_id") AS top FROM "device_inbox" GROUP BY "user_id", "device_id") AS q
WHERE d."user_id" = q."user_id" AND d."device_id" = q."device_id";
