ALTER TABLE "e2e_fallback_keys" ADD COLUMN "metadata" text;--> statement-breakpoint
ALTER TABLE "e2e_one_time_keys" ADD COLUMN "metadata" text;