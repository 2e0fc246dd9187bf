CREATE TABLE "queue_leases" (
	"queue" text PRIMARY KEY NOT NULL,
	"holder" text NOT NULL,
	"expires_ts" bigint NOT NULL
);
