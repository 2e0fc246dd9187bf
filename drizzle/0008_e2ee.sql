CREATE TABLE "dehydrated_devices" (
	"user_id" text PRIMARY KEY NOT NULL,
	"device_id" text NOT NULL,
	"device_data" text NOT NULL,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "device_list_changes" (
	"stream_id" bigserial PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"device_id" text,
	"created_ts" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "device_list_remote_trackers" (
	"destination" text NOT NULL,
	"user_id" text NOT NULL,
	"last_stream_id" bigint,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "device_list_remote_trackers_destination_user_id_pk" PRIMARY KEY("destination","user_id")
);
--> statement-breakpoint
CREATE TABLE "device_list_trackers" (
	"tracker_user_id" text NOT NULL,
	"target_user_id" text NOT NULL,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "device_list_trackers_tracker_user_id_target_user_id_pk" PRIMARY KEY("tracker_user_id","target_user_id")
);
--> statement-breakpoint
CREATE TABLE "e2e_cross_signing_keys" (
	"user_id" text NOT NULL,
	"key_type" text NOT NULL,
	"key_json" text NOT NULL,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "e2e_cross_signing_keys_user_id_key_type_pk" PRIMARY KEY("user_id","key_type")
);
--> statement-breakpoint
CREATE TABLE "e2e_device_keys" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"key_json" text NOT NULL,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "e2e_device_keys_user_id_device_id_pk" PRIMARY KEY("user_id","device_id")
);
--> statement-breakpoint
CREATE TABLE "e2e_fallback_keys" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"algorithm" text NOT NULL,
	"key_id" text NOT NULL,
	"key_json" text NOT NULL,
	"used" boolean DEFAULT false NOT NULL,
	CONSTRAINT "e2e_fallback_keys_user_id_device_id_algorithm_pk" PRIMARY KEY("user_id","device_id","algorithm")
);
--> statement-breakpoint
CREATE TABLE "e2e_one_time_keys" (
	"user_id" text NOT NULL,
	"device_id" text NOT NULL,
	"algorithm" text NOT NULL,
	"key_id" text NOT NULL,
	"key_json" text NOT NULL,
	"created_ts" bigint NOT NULL,
	CONSTRAINT "e2e_one_time_keys_user_id_device_id_algorithm_key_id_pk" PRIMARY KEY("user_id","device_id","algorithm","key_id")
);
--> statement-breakpoint
CREATE TABLE "e2e_signatures" (
	"signer_user_id" text NOT NULL,
	"signer_key_id" text NOT NULL,
	"target_user_id" text NOT NULL,
	"target_key_id" text NOT NULL,
	"signature" text NOT NULL,
	CONSTRAINT "e2e_signatures_signer_user_id_signer_key_id_target_user_id_target_key_id_pk" PRIMARY KEY("signer_user_id","signer_key_id","target_user_id","target_key_id")
);
--> statement-breakpoint
CREATE TABLE "remote_device_lists" (
	"user_id" text PRIMARY KEY NOT NULL,
	"stream_id" bigint,
	"keys_json" text NOT NULL,
	"subscribed" boolean DEFAULT false NOT NULL,
	"stale" boolean DEFAULT false NOT NULL,
	"fetched_ts" bigint NOT NULL
);
--> statement-breakpoint
ALTER TABLE "federation_outbox" ADD COLUMN "edu_type" text;--> statement-breakpoint
CREATE INDEX "device_list_changes_user" ON "device_list_changes" USING btree ("user_id","stream_id");--> statement-breakpoint
CREATE INDEX "device_list_remote_trackers_user" ON "device_list_remote_trackers" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "device_list_trackers_target" ON "device_list_trackers" USING btree ("target_user_id");--> statement-breakpoint
CREATE INDEX "e2e_signatures_target" ON "e2e_signatures" USING btree ("target_user_id","target_key_id");